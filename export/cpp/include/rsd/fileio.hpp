// Files: atomic writes (temp file in the same folder + rename) so outputs are never half-written.
#pragma once

#include <string>
#include <vector>

namespace rsd {

void write_file_atomic(const std::string& path, const std::string& bytes);
std::vector<char> read_file(const std::string& path);

}  // namespace rsd
