// TensorRT path (10.x incl. Jetson, and 11.x): deserialize a plan, one execution context, one CUDA
// stream, device buffers cached per shape, optional CUDA graph per shape. Compiled only with
// RSD_WITH_TENSORRT; otherwise the factory reports that the runner was built without TensorRT.
#include "rsd/graph_runner.hpp"

#ifndef RSD_WITH_TENSORRT

namespace rsd {
std::unique_ptr<GraphRunner> make_tensorrt_runner(const GraphInfo&, const RunnerOptions&) {
  throw Error("this rsd_upscale was built without TensorRT; rebuild with -DRSD_WITH_TENSORRT=ON on a machine "
              "with TensorRT and CUDA, or use --backend onnxruntime", kExitBackend);
}
}  // namespace rsd

#else

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <map>

#include "rsd/fileio.hpp"

namespace rsd {
namespace {

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
  }
};

Logger& trt_logger() {
  static Logger logger;  // TensorRT keeps a pointer: must outlive every runtime/engine
  return logger;
}

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(std::string("CUDA ") + what + " failed: " + cudaGetErrorString(status), kExitBackend);
}

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { if (ptr) cudaFree(ptr); }
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) cuda_check(cudaFree(ptr), "cudaFree");
    ptr = nullptr;
    cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
    bytes = n;
  }
};

nvinfer1::Dims to_dims(const std::vector<int64_t>& shape) {
  nvinfer1::Dims d{};
  d.nbDims = static_cast<int32_t>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) d.d[i] = shape[i];
  return d;
}

class TrtRunner final : public GraphRunner {
 public:
  TrtRunner(const GraphInfo& graph, const RunnerOptions& options) : graph_(graph), use_graph_(options.cuda_graph) {
    const auto it = graph.engines.find(options.precision);
    if (it == graph.engines.end())
      throw Error(graph.name + ": the bundle has no " + options.precision +
                  " TensorRT engine; build it (rsd-export --engines) or use --backend onnxruntime", kExitManifest);
    cuda_check(cudaSetDevice(options.device), "cudaSetDevice");
    const std::vector<char> plan = read_file(it->second.string());
    runtime_.reset(nvinfer1::createInferRuntime(trt_logger()));
    if (!runtime_) throw Error("TensorRT: createInferRuntime failed", kExitBackend);
    engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine_)
      throw Error(it->second.string() + ": TensorRT " + std::to_string(getInferLibVersion()) +
                  " cannot deserialize this plan (built for another TensorRT version or GPU); rebuild the engine "
                  "on this machine", kExitEngineMismatch);
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Error("TensorRT: createExecutionContext failed (out of GPU memory?)", kExitBackend);
    // every graph I/O must exist in the plan with float32 I/O
    for (const auto& list : {graph_.inputs, graph_.outputs})
      for (const auto& t : list) {
        bool found = false;
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) found |= t.name == engine_->getIOTensorName(i);
        if (!found)
          throw Error(it->second.string() + ": engine has no tensor '" + t.name + "'; rebuild it from this bundle",
                      kExitEngineMismatch);
        if (engine_->getTensorDataType(t.name.c_str()) != nvinfer1::DataType::kFLOAT)
          throw Error(it->second.string() + ": tensor '" + t.name + "' is not float32; export with fp32 I/O",
                      kExitEngineMismatch);
      }
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~TrtRunner() override {
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (stream_) cudaStreamDestroy(stream_);
    // reverse creation order: context, engine, runtime (unique_ptr members are declared in that order)
    context_.reset();
    engine_.reset();
    runtime_.reset();
  }

  Tensor run(const std::vector<const Tensor*>& inputs) override {
    check_inputs(graph_, inputs);
    const Tensor& first = *inputs.front();
    const int64_t batch = first.dim(0), lh = first.dim(2) / graph_.inputs.front().scale,
                  lw = first.dim(3) / graph_.inputs.front().scale;
    if (batch > graph_.max_batch || lh < graph_.min_hw[0] || lw < graph_.min_hw[1] || lh > graph_.max_hw[0] ||
        lw > graph_.max_hw[1])
      throw Error(graph_.name + ": batch " + std::to_string(batch) + ", latent " + std::to_string(lh) + "x" +
                  std::to_string(lw) + " is outside the engine profile; use a smaller --tile or rebuild the engine "
                  "with a larger profile", kExitShape);
    const std::string key = first.shape_str();
    bool shape_changed = key != current_key_;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const char* name = graph_.inputs[i].name.c_str();
      if (shape_changed && !context_->setInputShape(name, to_dims(inputs[i]->shape)))
        throw Error(graph_.name + ": setInputShape failed for '" + graph_.inputs[i].name + "'", kExitShape);
      DeviceBuffer& buf = buffers_[graph_.inputs[i].name];
      const size_t bytes = inputs[i]->size() * sizeof(float);
      if (bytes > buf.bytes) shape_changed = true;  // a new address invalidates a captured graph
      buf.reserve(bytes);
      cuda_check(cudaMemcpyAsync(buf.ptr, inputs[i]->data.data(), bytes, cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync H2D");
      context_->setTensorAddress(name, buf.ptr);
    }
    const TensorInfo& out_info = graph_.outputs.front();
    const nvinfer1::Dims od = context_->getTensorShape(out_info.name.c_str());
    std::vector<int64_t> out_shape(od.d, od.d + od.nbDims);
    Tensor out(out_shape);
    DeviceBuffer& obuf = buffers_[out_info.name];
    if (out.size() * sizeof(float) > obuf.bytes) shape_changed = true;
    obuf.reserve(out.size() * sizeof(float));
    context_->setTensorAddress(out_info.name.c_str(), obuf.ptr);
    if (shape_changed) {
      // shapes or addresses changed: captured graphs are stale
      for (auto& [k, exec] : graphs_) cudaGraphExecDestroy(exec);
      graphs_.clear();
      current_key_ = key;
    }
    enqueue(key);
    cuda_check(cudaMemcpyAsync(out.data.data(), obuf.ptr, out.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync D2H");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return out;
  }

 private:
  void enqueue(const std::string& key) {
    if (!use_graph_) {
      if (!context_->enqueueV3(stream_)) throw Error(graph_.name + ": enqueueV3 failed", kExitBackend);
      return;
    }
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      // one plain run first (lets TensorRT finish lazy allocations), then capture the same work
      if (!context_->enqueueV3(stream_)) throw Error(graph_.name + ": enqueueV3 failed", kExitBackend);
      cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      cudaGraph_t g = nullptr;
      cuda_check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
      const bool ok = context_->enqueueV3(stream_);
      cuda_check(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
      if (!ok) throw Error(graph_.name + ": enqueueV3 failed during CUDA graph capture", kExitBackend);
      cudaGraphExec_t exec = nullptr;
#if CUDART_VERSION >= 12000
      cuda_check(cudaGraphInstantiate(&exec, g, 0), "cudaGraphInstantiate");
#else  // CUDA 11 (older JetPack): the 5-argument form
      cuda_check(cudaGraphInstantiate(&exec, g, nullptr, nullptr, 0), "cudaGraphInstantiate");
#endif
      cudaGraphDestroy(g);
      graphs_[key] = exec;
      return;  // the plain run above already produced this call's output
    }
    cuda_check(cudaGraphLaunch(it->second, stream_), "cudaGraphLaunch");
  }

  GraphInfo graph_;
  bool use_graph_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_ = nullptr;
  std::map<std::string, DeviceBuffer> buffers_;
  std::map<std::string, cudaGraphExec_t> graphs_;
  std::string current_key_;
};

}  // namespace

std::unique_ptr<GraphRunner> make_tensorrt_runner(const GraphInfo& graph, const RunnerOptions& options) {
  return std::make_unique<TrtRunner>(graph, options);
}

}  // namespace rsd

#endif  // RSD_WITH_TENSORRT
