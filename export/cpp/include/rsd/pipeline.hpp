// LR image -> SR image around the three graphs, as rsd_deploy/pipeline/sr_pipeline.py does it:
// tiles of the LR image (product grid) -> per tile: pad (reflect/replicate) to the latent multiple,
// bicubic x sf, encoder -> z_y, z_t = z_y + prior_std * eps, denoiser(z_t, lq[, student noise]),
// decoder, crop -> feathered blend
// (raised-cosine ramps) -> clamp.
#pragma once

#include <memory>
#include <optional>

#include "rsd/graph_runner.hpp"
#include "rsd/manifest.hpp"

namespace rsd {

// Noise is a function of the LR/latent position only (never of the tile order or batch), so tiles
// agree in their overlaps and a tiled run consumes the same noise as an untiled one.
constexpr int64_t kNoiseCell = 64;

struct UpscaleOptions {
  int64_t tile = -1;     // LR pixels (rounded up to the latent multiple); -1: manifest default; 0: no tiling
  int64_t overlap = -1;  // LR pixels; -1: manifest default
  int64_t batch = 1;     // tiles per graph call (all tiles have one size; <= the engines' profile max batch)
  uint64_t seed = 0;     // runner noise: N(0,1) per 64x64 cell from std::mt19937_64 (not torch's stream)
  // Optional noise over the global latent grid anchored at the LR origin, (1, C, Hn, Wn), covering
  // every padded tile (see Upscaler::noise_extent); e.g. the Python pipeline's noise for parity.
  std::optional<Tensor> prior_noise;    // C = 3
  std::optional<Tensor> student_noise;  // C = manifest noise_channels
};

class Upscaler {
 public:
  Upscaler(Manifest manifest, const RunnerOptions& options);
  // (1, 3, H, W) LR in [-1, 1] -> (1, 3, sf*H, sf*W) SR clamped to the manifest's range.
  Tensor upscale(const Tensor& lr, const UpscaleOptions& options) const;
  // Padded tiles through the graphs: (B,3,h,w) LR -> (B,3,sf*h,sf*w), not clamped.
  Tensor run_tile(const Tensor& lr_tile, const Tensor& prior_noise, const Tensor* student_noise) const;
  // (Hn, Wn) a noise map must cover for an H x W image with these options.
  std::pair<int64_t, int64_t> noise_extent(int64_t height, int64_t width, const UpscaleOptions& options) const;
  const Manifest& manifest() const { return manifest_; }

 private:
  std::pair<int64_t, int64_t> tiling(const UpscaleOptions& options) const;
  Manifest manifest_;
  std::unique_ptr<GraphRunner> encoder_, denoiser_, decoder_;
};

// The runner's own position-keyed noise for latent rows [y, y+h), columns [x, x+w): channels 3
// (prior) then `student_channels`, drawn per kNoiseCell cell in that order.
std::pair<Tensor, Tensor> draw_region_noise(uint64_t seed, int64_t y, int64_t x, int64_t h, int64_t w,
                                            int64_t student_channels);

}  // namespace rsd
