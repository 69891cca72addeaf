#include "rsd/image_io.hpp"

#include <algorithm>
#include <cmath>

#include "rsd/fileio.hpp"

#include <stb_image.h>
#include <stb_image_write.h>

namespace rsd {

Tensor read_image(const std::string& path) {
  int w = 0, h = 0, channels = 0;
  stbi_uc* pixels = stbi_load(path.c_str(), &w, &h, &channels, 3);
  if (pixels == nullptr)
    throw Error(path + ": cannot read the image (" + std::string(stbi_failure_reason()) +
                "); pass a PNG or JPEG file", kExitImageIO);
  Tensor t({1, 3, h, w});
  const size_t plane = static_cast<size_t>(h) * static_cast<size_t>(w);
  // (x / 255 - 0.5) / 0.5 in float32, as upstream and bit-identical to the Python pipeline's to_model_range
  for (size_t i = 0; i < plane; ++i)
    for (size_t c = 0; c < 3; ++c)
      t.data[c * plane + i] = (static_cast<float>(pixels[i * 3 + c]) / 255.0f - 0.5f) / 0.5f;
  stbi_image_free(pixels);
  return t;
}

namespace {
void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}
}  // namespace

void write_png(const std::string& path, const Tensor& image) {
  if (image.shape.size() != 4 || image.dim(0) != 1 || image.dim(1) != 3)
    throw Error("write_png: expected a (1, 3, H, W) image, got " + image.shape_str(), kExitShape);
  const auto h = static_cast<size_t>(image.dim(2)), w = static_cast<size_t>(image.dim(3));
  const size_t plane = h * w;
  std::vector<unsigned char> rgb(plane * 3);
  for (size_t i = 0; i < plane; ++i)
    for (size_t c = 0; c < 3; ++c) {
      const float v = std::min(1.0f, std::max(-1.0f, image.data[c * plane + i]));
      // rsd_deploy.pixels.quantize's rule: (v * 0.5 + 0.5) * 255 in float32, ties to even (nearbyint in the
      // default rounding mode; lround would round them away from zero)
      rgb[i * 3 + c] = static_cast<unsigned char>(std::nearbyint((v * 0.5f + 0.5f) * 255.0f));
    }
  std::string bytes;
  if (!stbi_write_png_to_func(append_bytes, &bytes, static_cast<int>(w), static_cast<int>(h), 3, rgb.data(),
                              static_cast<int>(w * 3)))
    throw Error(path + ": PNG encoding failed", kExitImageIO);
  write_file_atomic(path, bytes);
}

}  // namespace rsd
