#include "rsd/tiling.hpp"

#include <algorithm>
#include <cmath>

#include "rsd/tensor.hpp"

namespace rsd {

std::vector<int64_t> tile_starts(int64_t size, int64_t tile, int64_t overlap) {
  if (size <= 0) throw Error("cannot tile a side of length " + std::to_string(size) + "; the image is empty", kExitShape);
  if (tile <= 0 || overlap < 0 || overlap >= tile)
    throw Error("tile " + std::to_string(tile) + " with overlap " + std::to_string(overlap) +
                " is invalid; use tile > 0 and 0 <= overlap < tile", kExitConfig);
  if (size <= tile) return {0};
  const int64_t stride = tile - overlap;
  std::vector<int64_t> starts;
  for (int64_t s = 0; s <= size - tile; s += stride) starts.push_back(s);
  if (starts.back() != size - tile) starts.push_back(size - tile);
  return starts;
}

std::vector<float> raised_cosine_ramp(int64_t n) {
  const double pi = std::acos(-1.0);
  std::vector<float> ramp(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k)
    ramp[static_cast<size_t>(k)] = static_cast<float>(0.5 - 0.5 * std::cos(pi * (static_cast<double>(k) + 0.5) / static_cast<double>(n)));
  return ramp;
}

std::vector<std::vector<float>> feather_weights_1d(const std::vector<int64_t>& starts, int64_t tile, int64_t scale) {
  std::vector<std::vector<float>> weights;
  const int64_t length = tile * scale;
  for (size_t i = 0; i < starts.size(); ++i) {
    std::vector<float> w(static_cast<size_t>(length), 1.0f);
    if (i > 0) {
      const int64_t ramp_in = (starts[i - 1] + tile - starts[i]) * scale;
      if (ramp_in > 0) {
        const auto r = raised_cosine_ramp(ramp_in);
        for (int64_t k = 0; k < ramp_in; ++k) w[static_cast<size_t>(k)] *= r[static_cast<size_t>(k)];
      }
    }
    if (i + 1 < starts.size()) {
      const int64_t ramp_out = (starts[i] + tile - starts[i + 1]) * scale;
      if (ramp_out > 0) {
        const auto r = raised_cosine_ramp(ramp_out);
        for (int64_t k = 0; k < ramp_out; ++k)
          w[static_cast<size_t>(length - ramp_out + k)] *= r[static_cast<size_t>(ramp_out - 1 - k)];
      }
    }
    weights.push_back(std::move(w));
  }
  return weights;
}

TilePlan TilePlan::build(int64_t height, int64_t width, int64_t tile, int64_t overlap) {
  if (height <= 0 || width <= 0)
    throw Error("cannot tile a " + std::to_string(height) + "x" + std::to_string(width) + " image; it is empty", kExitShape);
  TilePlan p;
  p.height = height;
  p.width = width;
  p.tile_h = tile > 0 ? std::min(tile, height) : height;
  p.tile_w = tile > 0 ? std::min(tile, width) : width;
  p.ys = tile_starts(height, p.tile_h, std::min(overlap, p.tile_h - 1));
  p.xs = tile_starts(width, p.tile_w, std::min(overlap, p.tile_w - 1));
  return p;
}

}  // namespace rsd
