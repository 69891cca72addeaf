// rsd_upscale: LR image -> SR image with an rsd-export bundle (ONNX Runtime or TensorRT).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "rsd/image_io.hpp"
#include "rsd/npy.hpp"
#include "rsd/pipeline.hpp"

namespace {

const char* kUsage =
    "usage: rsd_upscale --bundle DIR --input LR.png --output SR.png [options]\n"
    "  --backend onnxruntime|tensorrt   runtime (default: onnxruntime)\n"
    "  --precision fp32|fp16|int8       graph/engine variant from the manifest (default: fp32)\n"
    "  --tile N --overlap N             tiling in LR pixels (default: manifest; --tile 0 = whole image)\n"
    "  --batch N                        tiles per graph call (default: 1; <= the engine profile's max batch)\n"
    "  --seed N                         noise seed (default: 0)\n"
    "  --prior-noise F.npy              (1,3,Hp,Wp) prior noise over the padded LR grid (parity runs)\n"
    "  --student-noise F.npy            (1,C,Hp,Wp) RSD student noise map (parity runs)\n"
    "  --save-npy F.npy                 also write the float SR image (1,3,sH,sW), clamped\n"
    "  --threads N                      ONNX Runtime intra-op threads (default: runtime's choice)\n"
    "  --cuda-graph                     TensorRT: capture and replay CUDA graphs\n"
    "  --device N                       CUDA device (default: 0)\n";

std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key == "-h" || key == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (key.rfind("--", 0) != 0) throw rsd::Error("unexpected argument '" + key + "'; see --help", rsd::kExitConfig);
    if (key == "--cuda-graph") {
      args[key] = "1";
      continue;
    }
    if (i + 1 >= argc) throw rsd::Error(key + " needs a value; see --help", rsd::kExitConfig);
    args[key] = argv[++i];
  }
  for (const char* required : {"--bundle", "--input", "--output"})
    if (!args.count(required)) throw rsd::Error(std::string("missing ") + required + "; see --help", rsd::kExitConfig);
  static const char* known[] = {"--bundle", "--input", "--output", "--backend", "--precision", "--tile",
                                "--overlap", "--batch", "--seed", "--prior-noise", "--student-noise", "--save-npy",
                                "--threads", "--cuda-graph", "--device"};
  for (const auto& [key, value] : args) {
    bool ok = false;
    for (const char* k : known) ok |= key == k;
    if (!ok) throw rsd::Error("unknown option " + key + "; see --help", rsd::kExitConfig);
  }
  return args;
}

int64_t to_int(const std::map<std::string, std::string>& args, const std::string& key, int64_t fallback) {
  const auto it = args.find(key);
  if (it == args.end()) return fallback;
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument(key);
    return v;
  } catch (const std::exception&) {
    throw rsd::Error(key + " expects an integer, got '" + it->second + "'", rsd::kExitConfig);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto args = parse_args(argc, argv);
    if (args.at("--input") == args.at("--output"))
      throw rsd::Error("--output must differ from --input (inputs are never overwritten)", rsd::kExitConfig);
    rsd::RunnerOptions runner;
    if (args.count("--backend")) runner.backend = args.at("--backend");
    if (args.count("--precision")) runner.precision = args.at("--precision");
    runner.threads = static_cast<int>(to_int(args, "--threads", 0));
    runner.cuda_graph = args.count("--cuda-graph") > 0;
    runner.device = static_cast<int>(to_int(args, "--device", 0));

    rsd::UpscaleOptions options;
    options.tile = to_int(args, "--tile", -1);
    options.overlap = to_int(args, "--overlap", -1);
    options.batch = to_int(args, "--batch", 1);
    options.seed = static_cast<uint64_t>(to_int(args, "--seed", 0));
    if (args.count("--prior-noise")) options.prior_noise = rsd::read_npy(args.at("--prior-noise"));
    if (args.count("--student-noise")) options.student_noise = rsd::read_npy(args.at("--student-noise"));

    const rsd::Tensor lr = rsd::read_image(args.at("--input"));
    const auto t0 = std::chrono::steady_clock::now();
    rsd::Upscaler upscaler(rsd::load_manifest(args.at("--bundle")), runner);
    const auto t1 = std::chrono::steady_clock::now();
    const rsd::Tensor sr = upscaler.upscale(lr, options);
    const auto t2 = std::chrono::steady_clock::now();
    rsd::write_png(args.at("--output"), sr);
    if (args.count("--save-npy")) rsd::write_npy(args.at("--save-npy"), sr);
    const auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    std::fprintf(stderr, "rsd_upscale: %lldx%lld -> %lldx%lld (%s %s), load %.1f ms, upscale %.1f ms\n",
                 static_cast<long long>(lr.dim(3)), static_cast<long long>(lr.dim(2)),
                 static_cast<long long>(sr.dim(3)), static_cast<long long>(sr.dim(2)), runner.backend.c_str(),
                 runner.precision.c_str(), ms(t0, t1), ms(t1, t2));
    return 0;
  } catch (const rsd::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
