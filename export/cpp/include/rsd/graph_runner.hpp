// One loaded graph (ONNX Runtime session or TensorRT engine) that maps host inputs to one host output.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "rsd/manifest.hpp"

namespace rsd {

class GraphRunner {
 public:
  virtual ~GraphRunner() = default;
  // `inputs` in the order of GraphInfo::inputs; all (B, C, H, W) float32 on the host.
  virtual Tensor run(const std::vector<const Tensor*>& inputs) = 0;
};

struct RunnerOptions {
  std::string backend = "onnxruntime";  // onnxruntime | tensorrt
  std::string precision = "fp32";       // fp32 | fp16 | int8 (a variant/engine the manifest lists)
  int threads = 0;                      // ONNX Runtime intra-op threads (0: its default)
  bool cuda_graph = false;              // TensorRT: capture each shape once, replay after
  int device = 0;                       // CUDA device
  std::string lean_runtime;             // TensorRT: lean runtime library for plans built without it
                                        // (empty: libnvinfer_lean.so.<major> from the library path)
};

// Factories; each throws rsd::Error(kExitBackend) when its runtime was not compiled in.
std::unique_ptr<GraphRunner> make_onnxruntime_runner(const GraphInfo& graph, const RunnerOptions& options);
std::unique_ptr<GraphRunner> make_tensorrt_runner(const GraphInfo& graph, const RunnerOptions& options);

inline std::unique_ptr<GraphRunner> make_runner(const GraphInfo& graph, const RunnerOptions& options) {
  if (options.backend == "onnxruntime") return make_onnxruntime_runner(graph, options);
  if (options.backend == "tensorrt") return make_tensorrt_runner(graph, options);
  throw Error("unknown backend '" + options.backend + "'; choose onnxruntime or tensorrt", kExitConfig);
}

// Validate one input against the graph's I/O spec (channels, spatial scale, same batch/latent size).
void check_inputs(const GraphInfo& graph, const std::vector<const Tensor*>& inputs);

// The graph's inputs in its order from {role: tensor} (a null tensor: a role the graph may lack,
// e.g. student_noise of a non-RSD model). Throws rsd::Error (exit 9) for an input role not given.
std::vector<const Tensor*> inputs_by_role(const GraphInfo& graph,
                                          const std::vector<std::pair<std::string, const Tensor*>>& by_role);

}  // namespace rsd
