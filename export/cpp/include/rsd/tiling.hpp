// Tile geometry and feathered blending weights, the same as rsd_deploy/pipeline/tiling.py:
// a product grid of equal tiles in LR pixels, blended on the SR canvas with separable raised-cosine
// ramps over each actual overlap and normalised by the (separable) weight sum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace rsd {

// Start offsets 0, stride, 2*stride, ... (stride = tile - overlap) with the last one clamped to
// size - tile; size <= tile gives {0}.
std::vector<int64_t> tile_starts(int64_t size, int64_t tile, int64_t overlap);

// Rising ramp of n weights in (0, 1): 0.5 - 0.5*cos(pi*(k+0.5)/n); ramp + reversed ramp == 1.
std::vector<float> raised_cosine_ramp(int64_t n);

// Per-tile 1-D weights (length tile*scale) for tiles at `starts`: ramp up over the overlap with the
// previous tile, down over the overlap with the next one, 1 at the image border.
std::vector<std::vector<float>> feather_weights_1d(const std::vector<int64_t>& starts, int64_t tile, int64_t scale);

struct TilePlan {
  int64_t height = 0, width = 0, tile_h = 0, tile_w = 0;
  std::vector<int64_t> ys, xs;
  // tile <= 0: one tile covering the image. The overlap is clipped to tile - 1 per axis.
  static TilePlan build(int64_t height, int64_t width, int64_t tile, int64_t overlap);
  size_t size() const { return ys.size() * xs.size(); }
};

}  // namespace rsd
