// Image files <-> tensors. Reading: PNG/JPEG/BMP/TGA (stb_image), 8- or 16-bit, gray/alpha dropped to
// RGB; writing: 8-bit RGB PNG, atomically.
#pragma once

#include <string>

#include "rsd/tensor.hpp"

namespace rsd {

// (1, 3, H, W) float32 RGB in [-1, 1] (= (v / 255 - 0.5) / 0.5 in float32).
Tensor read_image(const std::string& path);

// (1, 3, H, W) in [-1, 1] -> PNG, uint8 = rint((clamp(x) * 0.5 + 0.5) * 255), ties to even (as pixels.quantize).
void write_png(const std::string& path, const Tensor& image);

}  // namespace rsd
