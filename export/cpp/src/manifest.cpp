#include "rsd/manifest.hpp"

#include <fstream>
#include <nlohmann/json.hpp>

namespace rsd {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw Error(path.string() + ": " + what + "; re-export the bundle with rsd-export", kExitManifest);
}

GraphInfo read_graph(const json& m, const std::string& name, const std::filesystem::path& root,
                     const std::filesystem::path& path) {
  if (!m.at("graphs").contains(name)) fail(path, "manifest has no graphs." + name);
  const json& g = m.at("graphs").at(name);
  GraphInfo info;
  info.name = name;
  const json& spec = g.at("spec");
  for (const auto& t : spec.at("inputs"))
    info.inputs.push_back({t.at("name"), t.at("role"), t.at("channels"), t.value("scale", 1)});
  for (const auto& t : spec.at("outputs"))
    info.outputs.push_back({t.at("name"), t.at("role"), t.at("channels"), t.value("scale", 1)});
  info.multiple = spec.at("multiple");
  const json& profile = spec.at("profile");
  info.max_batch = profile.at("max").at(0);
  info.min_hw[0] = profile.at("min").at(1);
  info.min_hw[1] = profile.at("min").at(2);
  info.max_hw[0] = profile.at("max").at(1);
  info.max_hw[1] = profile.at("max").at(2);
  for (const auto& [precision, variant] : g.at("variants").items())
    info.onnx[precision] = root / variant.at("file").get<std::string>();
  if (m.contains("engines") && m.at("engines").is_object() && m.at("engines").contains(name))
    for (const auto& [precision, engine] : m.at("engines").at(name).items())
      info.engines[precision] = root / engine.at("file").get<std::string>();
  if (info.outputs.size() != 1) fail(path, "graphs." + name + " must have exactly one output");
  return info;
}

}  // namespace

const TensorInfo& GraphInfo::by_role(const std::string& role) const {
  for (const auto* list : {&inputs, &outputs})
    for (const auto& t : *list)
      if (t.role == role) return t;
  std::string roles;
  for (const auto* list : {&inputs, &outputs})
    for (const auto& t : *list) roles += (roles.empty() ? "" : ", ") + t.role;
  throw Error(name + " graph has no tensor with role '" + role + "' (it has " + roles +
              "); re-export the bundle with rsd-export", kExitManifest);
}

bool GraphInfo::has_input(const std::string& role) const {
  for (const auto& t : inputs)
    if (t.role == role) return true;
  return false;
}

Manifest load_manifest(const std::filesystem::path& bundle_dir) {
  const std::filesystem::path path =
      std::filesystem::is_directory(bundle_dir) ? bundle_dir / "manifest.json" : bundle_dir;
  std::ifstream f(path);
  if (!f) throw Error(path.string() + ": no manifest found; pass the folder written by rsd-export", kExitManifest);
  json m;
  try {
    m = json::parse(f);
  } catch (const json::exception& e) {
    fail(path, std::string("manifest is not valid JSON (") + e.what() + ")");
  }
  Manifest out;
  out.root = path.parent_path();
  try {
    out.schema_version = m.at("schema_version");
    if (out.schema_version.rfind("2.", 0) != 0)
      throw Error(path.string() + ": manifest schema_version " + out.schema_version +
                  " is not supported (this runner reads 2.x); re-export the bundle with rsd-export or use a "
                  "matching runner", kExitManifest);
    const json& model = m.at("model");
    out.kind = model.at("kind");
    out.noise_channels = model.at("noise_channels");
    const json& d = m.at("diffusion");
    out.kappa = d.at("kappa");
    out.sqrt_eta_T = d.at("sqrt_eta_T");
    out.prior_std = d.at("prior_std");
    out.input_scale = d.at("input_scale");
    out.scale_factor = d.at("scale_factor");
    out.sf = d.at("sf");
    const json& pre = m.at("preprocess");
    out.latent_multiple = pre.at("latent_multiple");
    const json& up = pre.at("upsample");
    if (up.at("mode") != "bicubic" || up.at("align_corners").get<bool>() || up.at("antialias").get<bool>() ||
        up.at("where") != "host")
      fail(path, "preprocess.upsample must be host bicubic, align_corners=false, antialias=false (all this runner does)");
    out.upsample_a = up.at("a");
    const json& post = m.at("postprocess");
    out.clamp_lo = post.at("clamp").at(0);
    out.clamp_hi = post.at("clamp").at(1);
    const json& tiling = m.at("tiling");
    out.tile = tiling.at("tile");
    out.overlap = tiling.at("overlap");
    out.blend = tiling.at("blend");
    if (m.contains("versions") && m.at("versions").contains("tensorrt") && m.at("versions").at("tensorrt").is_string())
      out.tensorrt_version = m.at("versions").at("tensorrt");
    out.encoder = read_graph(m, "encoder", out.root, path);
    out.denoiser = read_graph(m, "denoiser", out.root, path);
    out.decoder = read_graph(m, "decoder", out.root, path);
  } catch (const json::exception& e) {
    fail(path, std::string("manifest is missing a key or has a wrong type (") + e.what() + ")");
  }
  if (out.scale_factor != 1.0)
    fail(path, "diffusion.scale_factor " + std::to_string(out.scale_factor) + " != 1 is not supported by this runner");
  if (out.latent_multiple < 1 || out.sf < 1) fail(path, "preprocess.latent_multiple and diffusion.sf must be >= 1");
  return out;
}

}  // namespace rsd
