// Host tensors and the one error type of the runner.
#pragma once

#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace rsd {

// One-line, user-facing error (the app prints "error: <what>" and exits with `exit_code`).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, int exit_code = 1)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Exit codes shared with rsd_deploy/errors.py.
constexpr int kExitConfig = 2;
constexpr int kExitShape = 4;
constexpr int kExitImageIO = 5;
constexpr int kExitBackend = 7;
constexpr int kExitEngineMismatch = 8;
constexpr int kExitManifest = 9;

// Dense float32 tensor on the host, row-major NCHW.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s, float fill = 0.0f) : shape(std::move(s)), data(count(shape), fill) {}

  static size_t count(const std::vector<int64_t>& s) {
    return static_cast<size_t>(std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>()));
  }
  size_t size() const { return data.size(); }
  int64_t dim(size_t i) const { return shape.at(i); }
  // NCHW accessors (no bounds check in release builds: callers index within shape)
  float& at(int64_t n, int64_t c, int64_t y, int64_t x) {
    return data[static_cast<size_t>(((n * shape[1] + c) * shape[2] + y) * shape[3] + x)];
  }
  float at(int64_t n, int64_t c, int64_t y, int64_t x) const {
    return data[static_cast<size_t>(((n * shape[1] + c) * shape[2] + y) * shape[3] + x)];
  }
  std::string shape_str() const {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
    return s + ")";
  }
};

}  // namespace rsd
