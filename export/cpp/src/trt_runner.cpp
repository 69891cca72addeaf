// TensorRT path (10.x incl. Jetson, and 11.x): deserialize a plan (version-compatible and lean-runtime-free
// plans included), one execution context, one CUDA stream, device buffers grown as needed, an address
// for every I/O tensor, and optionally one CUDA graph for the current input shapes (re-captured when
// any input shape changes; a failed capture falls back to plain runs). The runner's device is made
// current on every call. Compiled only with RSD_WITH_TENSORRT; otherwise the factory reports that the
// runner was built without TensorRT.
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
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

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

// What a plan needs at load time, from its sidecar (<plan>.json, written by rsd-export --build-engine).
struct PlanNeeds {
  bool version_compatible = false;
  bool exclude_lean_runtime = false;
  std::string built_with;
};

PlanNeeds read_plan_needs(const std::filesystem::path& plan) {
  PlanNeeds needs;
  std::filesystem::path side = plan;
  side += ".json";
  std::ifstream in(side);
  if (!in) return needs;  // no sidecar: a plain plan (deserialisation reports a mismatch itself)
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("cache_key")) return needs;
  const auto& key = j["cache_key"];
  const auto build = key.value("build", nlohmann::json::object());
  needs.version_compatible = build.value("version_compatible", false);
  needs.exclude_lean_runtime = needs.version_compatible && build.value("exclude_lean_runtime", false);
  needs.built_with = key.value("tensorrt", std::string());
  return needs;
}

class TrtRunner final : public GraphRunner {
 public:
  TrtRunner(const GraphInfo& graph, const RunnerOptions& options)
      : graph_(graph), use_graph_(options.cuda_graph), device_(options.device) {
    const auto it = graph.engines.find(options.precision);
    if (it == graph.engines.end())
      throw Error(graph.name + ": the bundle has no " + options.precision +
                  " TensorRT engine; build it (rsd-export --build-engine DIR) or use --backend onnxruntime",
                  kExitManifest);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    const std::vector<char> plan = read_file(it->second.string());
    const PlanNeeds needs = read_plan_needs(it->second);
    runtime_.reset(nvinfer1::createInferRuntime(trt_logger()));
    if (!runtime_) throw Error("TensorRT: createInferRuntime failed", kExitBackend);
    nvinfer1::IRuntime* loader = runtime_.get();
    if (needs.exclude_lean_runtime) {
      // plans without the lean runtime run in one loaded from a library (trtexec --leanDLLPath:
      // samples/common/sampleEngines.cpp loads it with IRuntime::loadRuntime)
      std::string major = needs.built_with.substr(0, needs.built_with.find('.'));
      const std::string path = options.lean_runtime.empty() ? "libnvinfer_lean.so." + major : options.lean_runtime;
      lean_runtime_.reset(runtime_->loadRuntime(path.c_str()));
      if (!lean_runtime_)
        throw Error(it->second.string() + ": the plan was built without the lean runtime and TensorRT could not "
                    "load " + path + "; put TensorRT " + needs.built_with + "'s lean runtime on the library "
                    "path (LD_LIBRARY_PATH) or rebuild without exclude_lean_runtime", kExitBackend);
      loader = lean_runtime_.get();
    }
    // version-compatible plans carry lean-runtime host code: the application must opt in
    // (IRuntime::setEngineHostCodeAllowed; trtexec does so for --versionCompatible)
    if (needs.version_compatible) loader->setEngineHostCodeAllowed(true);
    engine_.reset(loader->deserializeCudaEngine(plan.data(), plan.size()));
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
    // every engine output needs an address, not only the one the pipeline reads
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kOUTPUT) engine_outputs_.emplace_back(name);
    }
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~TrtRunner() override {
    cudaSetDevice(device_);  // the caller may have another device current by now
    if (stream_) cudaStreamSynchronize(stream_);  // nothing queued may outlive its buffers or context
    drop_graph();
    if (stream_) cudaStreamDestroy(stream_);
    // reverse creation order: context, engine, runtimes (members are declared in that order)
    context_.reset();
    engine_.reset();
    lean_runtime_.reset();
    runtime_.reset();
  }

  Tensor run(const std::vector<const Tensor*>& inputs) override {
    check_inputs(graph_, inputs);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");  // per call: the caller's thread may use another GPU
    const Tensor& first = *inputs.front();
    const int64_t batch = first.dim(0), lh = first.dim(2) / graph_.inputs.front().scale,
                  lw = first.dim(3) / graph_.inputs.front().scale;
    if (batch > graph_.max_batch || lh < graph_.min_hw[0] || lw < graph_.min_hw[1] || lh > graph_.max_hw[0] ||
        lw > graph_.max_hw[1])
      throw Error(graph_.name + ": batch " + std::to_string(batch) + ", latent " + std::to_string(lh) + "x" +
                  std::to_string(lw) + " is outside the engine profile; use a smaller --tile or rebuild the engine "
                  "with a larger profile", kExitShape);
    std::string key;  // the shapes of *all* inputs
    for (const Tensor* t : inputs) key += t->shape_str() + ";";
    bool rebind = key != current_key_;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const char* name = graph_.inputs[i].name.c_str();
      if (rebind && !context_->setInputShape(name, to_dims(inputs[i]->shape)))
        throw Error(graph_.name + ": setInputShape failed for '" + graph_.inputs[i].name + "'", kExitShape);
      DeviceBuffer& buf = buffers_[graph_.inputs[i].name];
      const size_t bytes = inputs[i]->size() * sizeof(float);
      if (bytes > buf.bytes) rebind = true;  // a new address invalidates a captured graph
      buf.reserve(bytes);
      cuda_check(cudaMemcpyAsync(buf.ptr, inputs[i]->data.data(), bytes, cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync H2D");
      set_address(name, buf.ptr);
    }
    Tensor out;
    void* out_ptr = nullptr;
    for (const std::string& name : engine_outputs_) {
      const nvinfer1::Dims od = context_->getTensorShape(name.c_str());
      size_t count = 1;
      for (int32_t d = 0; d < od.nbDims; ++d) {
        if (od.d[d] < 0) throw Error(graph_.name + ": output '" + name + "' has an unresolved shape", kExitShape);
        count *= static_cast<size_t>(od.d[d]);
      }
      DeviceBuffer& obuf = buffers_[name];
      // float32 I/O is checked for the manifest's tensors; other outputs get room for 8-byte types
      const size_t bytes = count * (name == graph_.outputs.front().name ? sizeof(float) : sizeof(int64_t));
      if (bytes > obuf.bytes) rebind = true;
      obuf.reserve(bytes);
      set_address(name.c_str(), obuf.ptr);
      if (name == graph_.outputs.front().name) {
        out = Tensor(std::vector<int64_t>(od.d, od.d + od.nbDims));
        out_ptr = obuf.ptr;
      }
    }
    if (rebind) {  // shapes or addresses changed: a captured graph is stale
      drop_graph();
      current_key_ = key;
    }
    enqueue();
    cuda_check(cudaMemcpyAsync(out.data.data(), out_ptr, out.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync D2H");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return out;
  }

 private:
  void set_address(const char* name, void* ptr) {
    if (!context_->setTensorAddress(name, ptr))
      throw Error(graph_.name + ": TensorRT rejected the address of tensor '" + std::string(name) + "'", kExitBackend);
  }

  void drop_graph() {
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    graph_exec_ = nullptr;
  }

  void enqueue() {
    if (graph_exec_) {
      cuda_check(cudaGraphLaunch(graph_exec_, stream_), "cudaGraphLaunch");
      return;
    }
    // plain run first (lets TensorRT finish lazy allocations outside any capture)
    if (!context_->enqueueV3(stream_)) throw Error(graph_.name + ": enqueueV3 failed", kExitBackend);
    if (use_graph_) capture();
  }

  // Capture the same work as a CUDA graph for the next calls at these shapes. Any failure ends the
  // capture, frees what it made and turns CUDA graphs off for this runner: the plain run above has
  // already produced this call's output.
  void capture() {
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    cudaGraph_t g = nullptr;
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      return give_up_graphs("cudaStreamBeginCapture failed");
    }
    const bool ok = context_->enqueueV3(stream_);
    const cudaError_t ended = cudaStreamEndCapture(stream_, &g);  // always end: the stream stays usable
    cudaGetLastError();  // clear a sticky capture error; it is reported below instead
    if (!ok || ended != cudaSuccess || g == nullptr) {
      if (g) cudaGraphDestroy(g);
      return give_up_graphs(!ok ? "enqueueV3 failed during capture" : "cudaStreamEndCapture failed");
    }
    cudaGraphExec_t exec = nullptr;
#if CUDART_VERSION >= 12000
    const cudaError_t made = cudaGraphInstantiate(&exec, g, 0);
#else  // CUDA 11 (older JetPack): the 5-argument form
    const cudaError_t made = cudaGraphInstantiate(&exec, g, nullptr, nullptr, 0);
#endif
    cudaGraphDestroy(g);
    if (made != cudaSuccess) return give_up_graphs("cudaGraphInstantiate failed");
    graph_exec_ = exec;
  }

  void give_up_graphs(const char* why) {
    std::fprintf(stderr, "[rsd] %s: CUDA graph capture failed (%s); running without CUDA graphs\n",
                 graph_.name.c_str(), why);
    use_graph_ = false;
  }

  GraphInfo graph_;
  bool use_graph_;
  int device_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::IRuntime> lean_runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::vector<std::string> engine_outputs_;
  cudaStream_t stream_ = nullptr;
  std::map<std::string, DeviceBuffer> buffers_;
  cudaGraphExec_t graph_exec_ = nullptr;
  std::string current_key_;
};

}  // namespace

std::unique_ptr<GraphRunner> make_tensorrt_runner(const GraphInfo& graph, const RunnerOptions& options) {
  return std::make_unique<TrtRunner>(graph, options);
}

}  // namespace rsd

#endif  // RSD_WITH_TENSORRT
