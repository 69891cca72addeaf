#include "rsd/image_ops.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>

namespace rsd {
namespace {

// Keys' cubic convolution kernels, as in PyTorch's upsample_bicubic2d.
inline float cubic_near(float x, float a) { return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f; }        // |x| <= 1
inline float cubic_far(float x, float a) { return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a; }  // 1 < |x| < 2

struct Taps {
  std::array<int64_t, 4> index;
  std::array<float, 4> weight;
};

// Source taps for every output coordinate along one axis.
std::vector<Taps> cubic_taps(int64_t in_size, int64_t out_size, float a) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  std::vector<Taps> taps(static_cast<size_t>(out_size));
  for (int64_t o = 0; o < out_size; ++o) {
    // cubic: no clamp of the source index at 0 (unlike linear modes)
    const float real = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
    const float floor_real = std::floor(real);
    const auto i0 = static_cast<int64_t>(floor_real);
    const float t = real - floor_real;
    Taps& tp = taps[static_cast<size_t>(o)];
    tp.weight = {cubic_far(t + 1.0f, a), cubic_near(t, a), cubic_near(1.0f - t, a), cubic_far(2.0f - t, a)};
    for (int k = 0; k < 4; ++k) tp.index[k] = std::clamp<int64_t>(i0 - 1 + k, 0, in_size - 1);
  }
  return taps;
}

}  // namespace

Tensor bicubic_upsample(const Tensor& input, int factor, float a) {
  if (input.shape.size() != 4 || factor < 1) throw Error("bicubic_upsample: expected an NCHW tensor and factor >= 1", kExitShape);
  const int64_t n = input.dim(0), c = input.dim(1), h = input.dim(2), w = input.dim(3);
  const int64_t oh = h * factor, ow = w * factor;
  const auto ty = cubic_taps(h, oh, a), tx = cubic_taps(w, ow, a);
  Tensor out({n, c, oh, ow});
  for (int64_t p = 0; p < n * c; ++p) {
    const float* src = input.data.data() + p * h * w;
    float* dst = out.data.data() + p * oh * ow;
    for (int64_t y = 0; y < oh; ++y) {
      const Taps& vy = ty[static_cast<size_t>(y)];
      for (int64_t x = 0; x < ow; ++x) {
        const Taps& vx = tx[static_cast<size_t>(x)];
        // row interpolation first, then column: PyTorch's CPU kernel order
        float acc = 0.0f;
        for (int j = 0; j < 4; ++j) {
          const float* row = src + vy.index[j] * w;
          const float r = row[vx.index[0]] * vx.weight[0] + row[vx.index[1]] * vx.weight[1] +
                          row[vx.index[2]] * vx.weight[2] + row[vx.index[3]] * vx.weight[3];
          acc += r * vy.weight[j];
        }
        dst[y * ow + x] = acc;
      }
    }
  }
  return out;
}

namespace {
// Source index of padded position i (0 <= i < size + pad) for an axis of `size` samples.
inline int64_t padded_source(int64_t i, int64_t size, bool reflect) {
  if (i < size) return i;
  return reflect ? 2 * (size - 1) - i : size - 1;
}
}  // namespace

Tensor pad_to_multiple(const Tensor& input, int multiple) {
  if (input.shape.size() != 4 || multiple < 1) throw Error("pad_to_multiple: expected an NCHW tensor and multiple >= 1", kExitShape);
  const int64_t n = input.dim(0), c = input.dim(1), h = input.dim(2), w = input.dim(3);
  const int64_t ph = round_up(h, multiple), pw = round_up(w, multiple);
  if (ph == h && pw == w) return input;
  // reflect (the official choice) per axis where it is defined (pad < side), replicate where not:
  // the Python pipeline's pad_to_multiple
  const bool reflect_h = (ph - h) < h, reflect_w = (pw - w) < w;
  Tensor out({n, c, ph, pw});
  for (int64_t p = 0; p < n * c; ++p) {
    const float* src = input.data.data() + p * h * w;
    float* dst = out.data.data() + p * ph * pw;
    for (int64_t y = 0; y < ph; ++y) {
      const int64_t sy = padded_source(y, h, reflect_h);
      for (int64_t x = 0; x < pw; ++x) dst[y * pw + x] = src[sy * w + padded_source(x, w, reflect_w)];
    }
  }
  return out;
}

Tensor crop(const Tensor& input, int64_t y0, int64_t x0, int64_t h, int64_t w) {
  const int64_t n = input.dim(0), c = input.dim(1), ih = input.dim(2), iw = input.dim(3);
  if (y0 < 0 || x0 < 0 || y0 + h > ih || x0 + w > iw || h <= 0 || w <= 0)
    throw Error("crop: window outside the tensor " + input.shape_str(), kExitShape);
  Tensor out({n, c, h, w});
  for (int64_t p = 0; p < n * c; ++p)
    for (int64_t y = 0; y < h; ++y)
      std::copy_n(input.data.data() + (p * ih + y0 + y) * iw + x0, w, out.data.data() + (p * h + y) * w);
  return out;
}

Tensor concat_batch(const std::vector<const Tensor*>& items) {
  if (items.empty()) throw Error("concat_batch: nothing to stack", kExitShape);
  std::vector<int64_t> shape = items.front()->shape;
  for (const Tensor* t : items)
    if (t->shape != shape || shape.at(0) != 1)
      throw Error("concat_batch: items must share one (1, C, H, W) shape", kExitShape);
  shape[0] = static_cast<int64_t>(items.size());
  Tensor out(shape);
  const size_t n = items.front()->size();
  for (size_t i = 0; i < items.size(); ++i) std::copy(items[i]->data.begin(), items[i]->data.end(), out.data.begin() + i * n);
  return out;
}

Tensor batch_item(const Tensor& batch, int64_t index) {
  std::vector<int64_t> shape = batch.shape;
  shape.at(0) = 1;
  Tensor out(shape);
  const auto n = static_cast<std::ptrdiff_t>(out.size());
  std::copy(batch.data.begin() + index * n, batch.data.begin() + (index + 1) * n, out.data.begin());
  return out;
}

void clamp_inplace(Tensor& t, float lo, float hi) {
  for (float& v : t.data) v = std::min(hi, std::max(lo, v));
}

}  // namespace rsd
