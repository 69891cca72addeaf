#include "rsd/graph_runner.hpp"

namespace rsd {

void check_inputs(const GraphInfo& graph, const std::vector<const Tensor*>& inputs) {
  if (inputs.size() != graph.inputs.size())
    throw Error(graph.name + ": expected " + std::to_string(graph.inputs.size()) + " inputs, got " +
                std::to_string(inputs.size()), kExitShape);
  int64_t batch = -1, lh = -1, lw = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = *inputs[i];
    const TensorInfo& spec = graph.inputs[i];
    if (t.shape.size() != 4 || t.dim(1) != spec.channels || t.dim(2) % spec.scale || t.dim(3) % spec.scale)
      throw Error(graph.name + ": input '" + spec.name + "' has shape " + t.shape_str() + ", expected (B," +
                  std::to_string(spec.channels) + ",H*" + std::to_string(spec.scale) + ",W*" +
                  std::to_string(spec.scale) + ")", kExitShape);
    const int64_t h = t.dim(2) / spec.scale, w = t.dim(3) / spec.scale;
    if (batch < 0) {
      batch = t.dim(0), lh = h, lw = w;
    } else if (t.dim(0) != batch || h != lh || w != lw) {
      throw Error(graph.name + ": input '" + spec.name + "' " + t.shape_str() + " disagrees with the other inputs",
                  kExitShape);
    }
  }
  if (lh % graph.multiple || lw % graph.multiple)
    throw Error(graph.name + ": latent size " + std::to_string(lh) + "x" + std::to_string(lw) +
                " is not a multiple of " + std::to_string(graph.multiple) + "; pad the input", kExitShape);
}

std::vector<const Tensor*> inputs_by_role(const GraphInfo& graph,
                                          const std::vector<std::pair<std::string, const Tensor*>>& by_role) {
  std::vector<const Tensor*> inputs;
  for (const auto& spec : graph.inputs) {
    const Tensor* found = nullptr;
    for (const auto& [role, tensor] : by_role)
      if (role == spec.role) found = tensor;
    if (found == nullptr)
      throw Error(graph.name + " input '" + spec.name + "' has role '" + spec.role +
                  "', which this runner does not provide; update the runner or re-export the bundle", kExitManifest);
    inputs.push_back(found);
  }
  for (const auto& [role, tensor] : by_role)
    if (tensor != nullptr && !graph.has_input(role))
      throw Error(graph.name + " graph has no input with role '" + role + "'; re-export the bundle", kExitManifest);
  return inputs;
}

}  // namespace rsd
