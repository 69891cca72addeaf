// ONNX Runtime path (C++ API over the C API): CPU execution provider, fp32 host I/O. Compiled only
// with RSD_WITH_ONNXRUNTIME.
#include "rsd/graph_runner.hpp"

#ifndef RSD_WITH_ONNXRUNTIME

namespace rsd {
std::unique_ptr<GraphRunner> make_onnxruntime_runner(const GraphInfo&, const RunnerOptions&) {
  throw Error("this rsd_upscale was built without ONNX Runtime; rebuild with -DRSD_WITH_ONNXRUNTIME=ON "
              "(see export/README.md) or use --backend tensorrt", kExitBackend);
}
}  // namespace rsd

#else

#include <onnxruntime_cxx_api.h>

namespace rsd {
namespace {

Ort::Env& ort_env() {
  static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "rsd-runner");
  return env;
}

class OrtRunner final : public GraphRunner {
 public:
  OrtRunner(const GraphInfo& graph, const RunnerOptions& options) : graph_(graph) {
    const auto it = graph.onnx.find(options.precision);
    if (it == graph.onnx.end())
      throw Error(graph.name + ": the bundle has no " + options.precision +
                  " ONNX graph; export it (rsd-export --" + options.precision + ") or pick another --precision",
                  kExitManifest);
    Ort::SessionOptions so;
    if (options.threads > 0) so.SetIntraOpNumThreads(options.threads);
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    try {
      session_ = std::make_unique<Ort::Session>(ort_env(), it->second.c_str(), so);
    } catch (const Ort::Exception& e) {
      throw Error(it->second.string() + ": ONNX Runtime cannot load the graph (" + e.what() + ")", kExitBackend);
    }
    // names point into graph_ (a member), so they live as long as the runner
    for (const auto& t : graph_.inputs) input_names_.push_back(t.name.c_str());
    output_name_ = graph_.outputs.front().name.c_str();
  }

  Tensor run(const std::vector<const Tensor*>& inputs) override {
    check_inputs(graph_, inputs);
    const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> values;
    values.reserve(inputs.size());
    for (const Tensor* t : inputs)
      // ORT does not write inputs; the const_cast only satisfies the C API signature
      values.push_back(Ort::Value::CreateTensor<float>(memory, const_cast<float*>(t->data.data()), t->size(),
                                                       t->shape.data(), t->shape.size()));
    std::vector<Ort::Value> outputs;
    try {
      outputs = session_->Run(Ort::RunOptions{nullptr}, input_names_.data(), values.data(), values.size(),
                              &output_name_, 1);
    } catch (const Ort::Exception& e) {
      throw Error(graph_.name + ": ONNX Runtime run failed (" + e.what() + ")", kExitBackend);
    }
    const auto info = outputs.front().GetTensorTypeAndShapeInfo();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw Error(graph_.name + ": output is not float32; export with fp32 I/O (keep_io_types)", kExitBackend);
    Tensor out(info.GetShape());
    const float* src = outputs.front().GetTensorData<float>();
    std::copy(src, src + out.size(), out.data.begin());
    return out;
  }

 private:
  GraphInfo graph_;
  std::unique_ptr<Ort::Session> session_;
  std::vector<const char*> input_names_;
  const char* output_name_ = nullptr;
};

}  // namespace

std::unique_ptr<GraphRunner> make_onnxruntime_runner(const GraphInfo& graph, const RunnerOptions& options) {
  return std::make_unique<OrtRunner>(graph, options);
}

}  // namespace rsd

#endif  // RSD_WITH_ONNXRUNTIME
