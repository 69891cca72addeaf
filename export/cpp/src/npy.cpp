#include "rsd/npy.hpp"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "rsd/fileio.hpp"

namespace rsd {

Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open the .npy file; check the path", kExitImageIO);
  char magic[6];
  unsigned char version[2];
  f.read(magic, 6);
  f.read(reinterpret_cast<char*>(version), 2);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw Error(path + ": not a .npy file; save it with numpy.save", kExitImageIO);
  uint32_t header_len = 0;
  if (version[0] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  f.read(header.data(), header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([<|=]?)(f4|f8)'")))
    throw Error(path + ": .npy dtype must be little-endian float32 or float64", kExitImageIO);
  const bool is_f8 = m[2] == "f8";
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True")))
    throw Error(path + ": .npy must be C-ordered (numpy.ascontiguousarray)", kExitImageIO);
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    throw Error(path + ": .npy header has no shape", kExitImageIO);
  std::vector<int64_t> shape;
  const std::string dims = m[1];
  std::regex num("[0-9]+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll(it->str()));
  Tensor t(shape);
  if (is_f8) {
    std::vector<double> tmp(t.size());
    f.read(reinterpret_cast<char*>(tmp.data()), static_cast<std::streamsize>(tmp.size() * sizeof(double)));
    for (size_t i = 0; i < tmp.size(); ++i) t.data[i] = static_cast<float>(tmp[i]);
  } else {
    f.read(reinterpret_cast<char*>(t.data.data()), static_cast<std::streamsize>(t.size() * sizeof(float)));
  }
  if (!f) throw Error(path + ": .npy file is truncated", kExitImageIO);
  return t;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  std::string dims;
  for (size_t i = 0; i < tensor.shape.size(); ++i) dims += std::to_string(tensor.shape[i]) + ",";
  if (tensor.shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // pad so that magic(6)+version(2)+len(2)+header is a multiple of 64, ending in '\n'
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(header.size() & 0xff));
  bytes.push_back(static_cast<char>((header.size() >> 8) & 0xff));
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(tensor.data.data()), tensor.size() * sizeof(float));
  write_file_atomic(path, bytes);
}

}  // namespace rsd
