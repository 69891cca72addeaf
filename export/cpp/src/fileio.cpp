#include "rsd/fileio.hpp"

#include <filesystem>
#include <fstream>
#include <random>

#include "rsd/tensor.hpp"

namespace rsd {

void write_file_atomic(const std::string& path, const std::string& bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(dir)) throw Error(path + ": output folder does not exist; create it first", kExitImageIO);
  std::random_device rd;
  const fs::path tmp = dir / ("." + target.filename().string() + ".tmp" + std::to_string(rd()));
  {
    std::ofstream f(tmp, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error(path + ": cannot write the output (disk full or no permission)", kExitImageIO);
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(path + ": cannot move the finished output into place (" + ec.message() + ")", kExitImageIO);
  }
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path + ": cannot open the file; check the path", kExitImageIO);
  const auto size = f.tellg();
  std::vector<char> buf(static_cast<size_t>(size));
  f.seekg(0);
  f.read(buf.data(), size);
  if (!f) throw Error(path + ": cannot read the file", kExitImageIO);
  return buf;
}

}  // namespace rsd
