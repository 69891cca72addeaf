#include "rsd/pipeline.hpp"

#include <cstdio>
#include <random>

#include "rsd/image_ops.hpp"
#include "rsd/tiling.hpp"

namespace rsd {

Upscaler::Upscaler(Manifest manifest, const RunnerOptions& options) : manifest_(std::move(manifest)) {
  encoder_ = make_runner(manifest_.encoder, options);
  denoiser_ = make_runner(manifest_.denoiser, options);
  decoder_ = make_runner(manifest_.decoder, options);
}

Tensor Upscaler::run_tile(const Tensor& lr_tile, const Tensor& prior_noise, const Tensor* student_noise) const {
  const Manifest& m = manifest_;
  const Tensor image = bicubic_upsample(lr_tile, static_cast<int>(m.sf), m.upsample_a);
  const Tensor z_y = encoder_->run(inputs_by_role(m.encoder, {{role::kLrUpsampled, &image}}));
  if (prior_noise.shape != z_y.shape)
    throw Error("prior noise " + prior_noise.shape_str() + " does not match the latent " + z_y.shape_str(), kExitShape);
  // the prior sample z_T = z_y + kappa sqrt(eta_T) eps (the one-step graph takes it as it is)
  Tensor z_t = z_y;
  const float prior_std = static_cast<float>(m.prior_std);
  for (size_t i = 0; i < z_t.data.size(); ++i) z_t.data[i] += prior_std * prior_noise.data[i];
  const Tensor x0 = denoiser_->run(inputs_by_role(
      m.denoiser, {{role::kZt, &z_t}, {role::kLq, &lr_tile}, {role::kStudentNoise, student_noise}}));
  return decoder_->run(inputs_by_role(m.decoder, {{role::kX0, &x0}}));
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

std::pair<Tensor, Tensor> draw_region_noise(uint64_t seed, int64_t y, int64_t x, int64_t h, int64_t w,
                                            int64_t student_channels) {
  Tensor prior({1, 3, h, w}), student({1, student_channels, h, w});
  const int64_t cell = kNoiseCell;
  std::vector<float> cell_maps(static_cast<size_t>((3 + student_channels) * cell * cell));
  for (int64_t row = y / cell; row <= (y + h - 1) / cell; ++row)
    for (int64_t col = x / cell; col <= (x + w - 1) / cell; ++col) {
      std::mt19937_64 rng(splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(row)) ^ static_cast<uint64_t>(col)));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& v : cell_maps) v = normal(rng);
      for (int64_t c = 0; c < 3 + student_channels; ++c) {
        Tensor& dst = c < 3 ? prior : student;
        const int64_t dc = c < 3 ? c : c - 3;
        for (int64_t yy = std::max(y, row * cell); yy < std::min(y + h, (row + 1) * cell); ++yy)
          for (int64_t xx = std::max(x, col * cell); xx < std::min(x + w, (col + 1) * cell); ++xx)
            dst.at(0, dc, yy - y, xx - x) = cell_maps[static_cast<size_t>((c * cell + yy - row * cell) * cell + xx - col * cell)];
      }
    }
  return {std::move(prior), std::move(student)};
}

std::pair<int64_t, int64_t> Upscaler::tiling(const UpscaleOptions& options) const {
  const int64_t multiple = manifest_.latent_multiple;
  int64_t tile = options.tile >= 0 ? options.tile : manifest_.tile;
  const int64_t overlap = options.overlap >= 0 ? options.overlap : manifest_.overlap;
  if (tile > 0 && tile % multiple) tile = round_up(tile, multiple);  // as the Python pipeline: no padding inside tiles
  if (tile > 0 && overlap >= tile)
    throw Error("overlap " + std::to_string(overlap) + " must be smaller than the tile size " + std::to_string(tile),
                kExitConfig);
  if (overlap < 0) throw Error("overlap must be >= 0", kExitConfig);
  return {tile, overlap};
}

std::pair<int64_t, int64_t> Upscaler::noise_extent(int64_t height, int64_t width, const UpscaleOptions& options) const {
  const auto [tile, overlap] = tiling(options);
  const TilePlan plan = TilePlan::build(height, width, tile, overlap);
  const int64_t m = manifest_.latent_multiple;
  return {plan.ys.back() + round_up(plan.tile_h, m), plan.xs.back() + round_up(plan.tile_w, m)};
}

Tensor Upscaler::upscale(const Tensor& lr, const UpscaleOptions& options) const {
  if (lr.shape.size() != 4 || lr.dim(0) != 1 || lr.dim(1) != 3)
    throw Error("upscale: expected a (1, 3, H, W) image, got " + lr.shape_str(), kExitShape);
  const Manifest& m = manifest_;
  const int64_t sf = m.sf, multiple = m.latent_multiple, nc = m.noise_channels;
  const int64_t height = lr.dim(2), width = lr.dim(3);
  const auto [tile, overlap] = tiling(options);
  const TilePlan plan = TilePlan::build(height, width, tile, overlap);
  const auto [need_h, need_w] = noise_extent(height, width, options);
  if (options.student_noise && nc == 0)
    throw Error("--student-noise given but this model has no noise input (noise_channels 0)", kExitConfig);
  for (const auto* noise : {&options.prior_noise, &options.student_noise}) {
    if (!*noise) continue;
    const Tensor& t = **noise;
    const int64_t channels = noise == &options.prior_noise ? 3 : nc;
    if (t.shape.size() != 4 || t.dim(0) != 1 || t.dim(1) != channels || t.dim(2) < need_h || t.dim(3) < need_w)
      throw Error("noise map " + t.shape_str() + " must be (1," + std::to_string(channels) + ",>=" +
                  std::to_string(need_h) + ",>=" + std::to_string(need_w) +
                  "): the latent grid covering every padded tile of this image", kExitShape);
  }

  const auto wy = feather_weights_1d(plan.ys, plan.tile_h, sf), wx = feather_weights_1d(plan.xs, plan.tile_w, sf);
  std::vector<float> sum_y(static_cast<size_t>(height * sf), 0.0f), sum_x(static_cast<size_t>(width * sf), 0.0f);
  for (size_t r = 0; r < plan.ys.size(); ++r)
    for (int64_t i = 0; i < plan.tile_h * sf; ++i) sum_y[static_cast<size_t>(plan.ys[r] * sf + i)] += wy[r][static_cast<size_t>(i)];
  for (size_t c = 0; c < plan.xs.size(); ++c)
    for (int64_t i = 0; i < plan.tile_w * sf; ++i) sum_x[static_cast<size_t>(plan.xs[c] * sf + i)] += wx[c][static_cast<size_t>(i)];

  if (options.batch < 1) throw Error("--batch must be >= 1", kExitConfig);
  struct Job {
    int64_t row, col;
    Tensor lq, prior, student;
  };
  std::vector<Job> jobs;
  for (size_t r = 0; r < plan.ys.size(); ++r)
    for (size_t c = 0; c < plan.xs.size(); ++c) {
      const int64_t y = plan.ys[r], x = plan.xs[c];
      Job job{static_cast<int64_t>(r), static_cast<int64_t>(c),
              pad_to_multiple(crop(lr, y, x, plan.tile_h, plan.tile_w), static_cast<int>(multiple)), {}, {}};
      const int64_t hp = job.lq.dim(2), wp = job.lq.dim(3);
      if (!options.prior_noise || (nc > 0 && !options.student_noise)) {
        auto drawn = draw_region_noise(options.seed, y, x, hp, wp, nc);
        job.prior = std::move(drawn.first);
        job.student = std::move(drawn.second);
      }
      if (options.prior_noise) job.prior = crop(*options.prior_noise, y, x, hp, wp);
      if (options.student_noise) job.student = crop(*options.student_noise, y, x, hp, wp);
      jobs.push_back(std::move(job));
    }

  Tensor acc({1, 3, height * sf, width * sf});
  for (size_t first = 0; first < jobs.size(); first += static_cast<size_t>(options.batch)) {
    const size_t last = std::min(jobs.size(), first + static_cast<size_t>(options.batch));
    std::vector<const Tensor*> lqs, priors, students;
    for (size_t i = first; i < last; ++i) {
      lqs.push_back(&jobs[i].lq);
      priors.push_back(&jobs[i].prior);
      students.push_back(&jobs[i].student);
    }
    const Tensor student_batch = nc ? concat_batch(students) : Tensor();
    const Tensor out_batch = run_tile(concat_batch(lqs), concat_batch(priors), nc ? &student_batch : nullptr);
    for (size_t i = first; i < last; ++i) {
      const Tensor out = batch_item(out_batch, static_cast<int64_t>(i - first));
      const int64_t y = plan.ys[static_cast<size_t>(jobs[i].row)], x = plan.xs[static_cast<size_t>(jobs[i].col)];
      const auto& vy = wy[static_cast<size_t>(jobs[i].row)];
      const auto& vx = wx[static_cast<size_t>(jobs[i].col)];
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t ii = 0; ii < plan.tile_h * sf; ++ii)
          for (int64_t j = 0; j < plan.tile_w * sf; ++j)
            acc.at(0, ch, y * sf + ii, x * sf + j) +=
                out.at(0, ch, ii, j) * (vy[static_cast<size_t>(ii)] * vx[static_cast<size_t>(j)]);
    }
    if (plan.size() > 1) std::fprintf(stderr, "\rrsd_upscale: tile %zu/%zu", last, plan.size());
  }
  if (plan.size() > 1) std::fputc('\n', stderr);
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < height * sf; ++i)
      for (int64_t j = 0; j < width * sf; ++j) acc.at(0, ch, i, j) /= sum_y[static_cast<size_t>(i)] * sum_x[static_cast<size_t>(j)];
  clamp_inplace(acc, m.clamp_lo, m.clamp_hi);
  return acc;
}

}  // namespace rsd
