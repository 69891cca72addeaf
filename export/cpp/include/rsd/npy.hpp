// Minimal .npy (format 1.0/2.0, little-endian float32/float64, C order) reader and float32 writer,
// so noise maps and outputs can be exchanged with numpy for parity checks.
#pragma once

#include <string>

#include "rsd/tensor.hpp"

namespace rsd {

Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const Tensor& tensor);  // atomic (temp file + rename)

}  // namespace rsd
