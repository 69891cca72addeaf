// Host-side image operations of the SR pipeline (the parts kept out of the engines).
#pragma once

#include <vector>

#include "rsd/tensor.hpp"

namespace rsd {

// PyTorch F.interpolate(mode="bicubic", align_corners=False, antialias=False) by an integer factor:
// cubic convolution with a = -0.75, source index scale*(dst+0.5)-0.5, edge samples clamped, no output
// clamp. (N,C,H,W) -> (N,C,H*factor,W*factor).
Tensor bicubic_upsample(const Tensor& input, int factor, float a = -0.75f);

// Pad bottom/right to multiples of `multiple`: per axis F.pad(mode="reflect") where the pad is smaller
// than the side, "replicate" where it is not (rsd_deploy.pipeline.image_io.pad_to_multiple).
Tensor pad_to_multiple(const Tensor& input, int multiple);

// Rows [y0, y0+h) and columns [x0, x0+w) of every (n, c) plane.
Tensor crop(const Tensor& input, int64_t y0, int64_t x0, int64_t h, int64_t w);

// Stack (1, C, H, W) tensors of one shape along the batch axis, and take item `index` back out.
Tensor concat_batch(const std::vector<const Tensor*>& items);
Tensor batch_item(const Tensor& batch, int64_t index);

// Elementwise clamp to [lo, hi].
void clamp_inplace(Tensor& t, float lo, float hi);

inline int64_t round_up(int64_t v, int64_t multiple) { return (v + multiple - 1) / multiple * multiple; }

}  // namespace rsd
