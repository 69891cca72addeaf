// rsd_ops: the runner's host operations on .npy files, so tests can compare them with PyTorch/numpy.
//   rsd_ops bicubic IN.npy FACTOR OUT.npy
//   rsd_ops pad IN.npy MULTIPLE OUT.npy
//   rsd_ops tiles HEIGHT WIDTH TILE OVERLAP          (prints "tile_h tile_w" then the ys and xs lines)
//   rsd_ops feather TILE SCALE OUT.npy START...       (per-tile 1-D weights stacked: (n, TILE*SCALE))
//   rsd_ops read-image IN.png OUT.npy
//   rsd_ops noise SEED Y X H W STUDENT_CHANNELS PRIOR.npy STUDENT.npy   (the runner's own noise)
#include <algorithm>
#include <cstdio>
#include <string>

#include "rsd/image_io.hpp"
#include "rsd/image_ops.hpp"
#include "rsd/npy.hpp"
#include "rsd/pipeline.hpp"
#include "rsd/tiling.hpp"

int main(int argc, char** argv) {
  try {
    const std::string op = argc > 1 ? argv[1] : "";
    if (op == "bicubic" && argc == 5) {
      rsd::write_npy(argv[4], rsd::bicubic_upsample(rsd::read_npy(argv[2]), std::stoi(argv[3])));
    } else if (op == "pad" && argc == 5) {
      rsd::write_npy(argv[4], rsd::pad_to_multiple(rsd::read_npy(argv[2]), std::stoi(argv[3])));
    } else if (op == "tiles" && argc == 6) {
      const auto plan = rsd::TilePlan::build(std::stoll(argv[2]), std::stoll(argv[3]), std::stoll(argv[4]),
                                             std::stoll(argv[5]));
      std::printf("%lld %lld\n", static_cast<long long>(plan.tile_h), static_cast<long long>(plan.tile_w));
      for (const auto* starts : {&plan.ys, &plan.xs}) {
        for (int64_t s : *starts) std::printf("%lld ", static_cast<long long>(s));
        std::printf("\n");
      }
    } else if (op == "feather" && argc >= 6) {
      const int64_t tile = std::stoll(argv[2]), scale = std::stoll(argv[3]);
      std::vector<int64_t> starts;
      for (int i = 5; i < argc; ++i) starts.push_back(std::stoll(argv[i]));
      const auto weights = rsd::feather_weights_1d(starts, tile, scale);
      rsd::Tensor t({static_cast<int64_t>(weights.size()), tile * scale});
      for (size_t i = 0; i < weights.size(); ++i) std::copy(weights[i].begin(), weights[i].end(), t.data.begin() + i * tile * scale);
      rsd::write_npy(argv[4], t);
    } else if (op == "noise" && argc == 10) {
      auto maps = rsd::draw_region_noise(std::stoull(argv[2]), std::stoll(argv[3]), std::stoll(argv[4]),
                                         std::stoll(argv[5]), std::stoll(argv[6]), std::stoll(argv[7]));
      rsd::write_npy(argv[8], maps.first);
      rsd::write_npy(argv[9], maps.second);
    } else if (op == "read-image" && argc == 4) {
      rsd::write_npy(argv[3], rsd::read_image(argv[2]));
    } else {
      std::fputs("usage: rsd_ops bicubic|pad|tiles|feather|read-image ... (see the source header)\n", stderr);
      return 2;
    }
    return 0;
  } catch (const rsd::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  }
}
