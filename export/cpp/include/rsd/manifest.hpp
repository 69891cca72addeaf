// The bundle manifest (manifest.json written by `rsd-export`, schema rsd_deploy/bundle/
// manifest.schema.json, version 2.x): what the runner needs from it. Graph tensors are found by
// their role (the contract of rsd_deploy/bundle/specs.py); their names come from the manifest.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "rsd/tensor.hpp"

namespace rsd {

// Tensor roles (manifest graphs.<g>.spec.inputs/outputs[].role).
namespace role {
inline constexpr const char* kLrUpsampled = "lr_upsampled";  // encoder input: bicubic x sf LR image
inline constexpr const char* kLatent = "latent";              // encoder output z_y
inline constexpr const char* kZt = "z_t";                     // denoiser input: z_y + prior_std * eps
inline constexpr const char* kLq = "lq";                      // denoiser input: LR image at latent size
inline constexpr const char* kStudentNoise = "student_noise"; // denoiser input of RSD students
inline constexpr const char* kX0 = "x0";                      // denoiser output, decoder input
inline constexpr const char* kSrImage = "sr_image";           // decoder output
}  // namespace role

struct TensorInfo {
  std::string name;  // the graph's name for it (only used to address the graph)
  std::string role;
  int64_t channels = 0;
  int64_t scale = 1;  // spatial size = scale * latent size
};

struct GraphInfo {
  std::string name;  // encoder | denoiser | decoder
  std::vector<TensorInfo> inputs, outputs;
  int64_t multiple = 1;
  int64_t max_batch = 1;               // profile max batch
  int64_t min_hw[2] = {1, 1}, max_hw[2] = {1, 1};  // profile latent H/W range
  std::map<std::string, std::filesystem::path> onnx;     // precision -> ONNX file (absolute)
  std::map<std::string, std::filesystem::path> engines;  // precision -> TensorRT plan (absolute)

  // The input or output with `role`; throws rsd::Error (exit 9) naming the graph's roles if none.
  const TensorInfo& by_role(const std::string& role) const;
  bool has_input(const std::string& role) const;
};

struct Manifest {
  std::filesystem::path root;
  std::string schema_version, kind;
  int64_t noise_channels = 0;
  double kappa = 0, sqrt_eta_T = 0, prior_std = 0, input_scale = 0, scale_factor = 1;
  int64_t sf = 4, latent_multiple = 1;
  float clamp_lo = -1.0f, clamp_hi = 1.0f;
  float upsample_a = -0.75f;
  int64_t tile = 0, overlap = 0;
  std::string blend;
  std::string tensorrt_version;  // empty when the export had no TensorRT
  GraphInfo encoder, denoiser, decoder;
};

// Read and check <bundle_dir>/manifest.json (or a manifest file path). Throws rsd::Error (exit 9).
Manifest load_manifest(const std::filesystem::path& bundle_dir);

}  // namespace rsd
