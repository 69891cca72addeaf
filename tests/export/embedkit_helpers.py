"""Helpers for the embedding-kit tests (bundle schema, C++ runner, Triton repository).

``write_synthetic_bundle`` writes a small but complete bundle: three ONNX graphs with exactly the
I/O of :mod:`rsd_deploy.bundle.specs` (real convolutions, pooling, depth-to-space; random fixed
weights) and a manifest in the schema's format. It needs no trained model and no exporter, so the
C++/Triton plumbing is tested on its own; tests against real exports use ``export_models``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from rsd_deploy.bundle.specs import graph_specs

REPO = Path(__file__).resolve().parents[2]
CPP_DIR = REPO / "export" / "cpp"
OPSET = 17
V1_STEPS, V1_KAPPA, V1_SQRT_ETA_T = 15, 2.0, 0.99


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def synthetic_graphs(noise_channels: int, kappa: float, sqrt_eta_t: float, seed: int = 0) -> Dict[str, "object"]:
    """{submodel: onnx.ModelProto} with the specs' I/O names, dynamic batch/H/W, fp32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    input_scale = 1.0 / math.sqrt(kappa ** 2 * sqrt_eta_t ** 2 + 1.0)

    def io(name: str, channels: int, suffix: str = ""):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, "height" + suffix,
                                                                       "width" + suffix])

    def weight(name: str, shape, scale: float):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def scalar(name: str, value: float):
        return numpy_helper.from_array(np.array(value, np.float32), name)

    encoder = helper.make_graph(
        [helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("Conv", ["pooled", "enc_w"], ["latent"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        "encoder", [io("image", 3, "_x4")], [io("latent", 3)], [weight("enc_w", (3, 3, 3, 3), 0.3)])

    cat_inputs = ["scaled", "lq"] + (["noise"] if noise_channels else [])
    den_inputs = [io("z_t", 3), io("lq", 3)] + ([io("noise", noise_channels)] if noise_channels else [])
    denoiser = helper.make_graph(
        [helper.make_node("Mul", ["z_t", "input_scale"], ["scaled"]),
         helper.make_node("Concat", cat_inputs, ["cat"], axis=1),
         helper.make_node("Conv", ["cat", "den_w"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Tanh", ["conv"], ["mixed"]),
         helper.make_node("Add", ["mixed", "scaled"], ["x0"])],
        "denoiser", den_inputs, [io("x0", 3)],
        [scalar("input_scale", input_scale),
         weight("den_w", (3, 6 + noise_channels, 3, 3), 0.2)])

    decoder = helper.make_graph(
        [helper.make_node("Conv", ["latent", "dec_w"], ["features"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("DepthToSpace", ["features"], ["image"], blocksize=4, mode="CRD")],
        "decoder", [io("latent", 3)], [io("image", 3, "_x4")], [weight("dec_w", (48, 3, 3, 3), 0.4)])

    models = {}
    for name, graph in (("encoder", encoder), ("denoiser", denoiser), ("decoder", decoder)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="rsd-deploy-tests")
        model.ir_version = 8
        onnx.checker.check_model(model)
        models[name] = model
    return models


def manifest_dict(graph_files: Dict[str, Path], bundle: Path, *, multiple: int, noise_channels: int,
                  tile: int = 64, overlap: int = 16, kind: str = "rsd") -> dict:
    """A schema-2.0 manifest for the given fp32 graph files (relative to ``bundle``)."""
    specs = graph_specs(multiple, noise_channels)
    graphs = {}
    for name, spec in specs.items():
        path = graph_files[name]
        graphs[name] = {"spec": spec.to_dict(), "variants": {"fp32": {
            "file": path.name, "sha256": _sha256(path), "external_data": [], "bytes": path.stat().st_size,
            "opset": OPSET, "precision_recipe": {"tool": "onnx.helper (synthetic test graph)", "kept_fp32": ["*"]}}}}
    return {
        "schema_version": "2.0",
        "toolkit": {"name": "rsd-deploy", "version": "0.1.0"},
        "created_utc": "2026-11-26T05:00:00Z",
        "model": {"kind": kind, "demo": True, "noise_channels": noise_channels, "unet_checkpoint": None,
                  "vq_checkpoint": None},
        "diffusion": {"steps": V1_STEPS, "timestep": V1_STEPS - 1, "kappa": V1_KAPPA, "sqrt_eta_T": V1_SQRT_ETA_T,
                      "prior_std": V1_KAPPA * V1_SQRT_ETA_T,
                      "input_scale": 1.0 / math.sqrt(V1_KAPPA ** 2 * V1_SQRT_ETA_T ** 2 + 1.0),
                      "scale_factor": 1.0, "sf": 4},
        "preprocess": {"color": "RGB", "layout": "NCHW", "range": [-1.0, 1.0], "latent_multiple": multiple,
                       "pad": "reflect, replicate when a side is too small",
                       "upsample": {"mode": "bicubic", "a": -0.75, "align_corners": False, "antialias": False,
                                    "where": "host"}},
        "postprocess": {"clamp": [-1.0, 1.0], "to_uint8": "round((x + 1) * 127.5)"},
        "tiling": {"tile": tile, "overlap": overlap, "units": "LR pixels", "blend": "feathered"},
        "graphs": graphs,
        "engines": {},
        "accuracy_report": None,
        "versions": {"torch": None, "onnx": None, "onnxruntime": None, "tensorrt": None},
    }


def _rename_io(model, rename) -> None:
    """Rename a graph's inputs and outputs (and every node reference to them) in place."""
    graph = model.graph
    mapping = {v.name: rename(v.name) for v in list(graph.input) + list(graph.output)}
    for v in list(graph.input) + list(graph.output):
        v.name = mapping[v.name]
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]


def write_synthetic_bundle(bundle: Path, *, multiple: int = 16, noise_channels: int = 1, tile: int = 32,
                           overlap: int = 8, sqrt_eta_t: Optional[float] = None, kind: str = "rsd",
                           io_prefix: str = "") -> dict:
    """Write graphs + manifest.json into ``bundle``; returns the manifest dict. ``io_prefix``
    renames every graph input and output (in the graphs and the manifest): runtimes that bind by
    role must give the same results."""
    import onnx

    bundle.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, model in synthetic_graphs(noise_channels, V1_KAPPA, sqrt_eta_t or V1_SQRT_ETA_T).items():
        if io_prefix:
            _rename_io(model, lambda n: io_prefix + n)
        files[name] = bundle / f"{name}.onnx"
        onnx.save(model, str(files[name]))
    manifest = manifest_dict(files, bundle, multiple=multiple, noise_channels=noise_channels, tile=tile,
                             overlap=overlap, kind=kind)
    if io_prefix:
        for graph in manifest["graphs"].values():
            spec = graph["spec"]
            for t in spec["inputs"] + spec["outputs"]:
                t["name"] = io_prefix + t["name"]
            spec["dynamic_axes"] = {io_prefix + k: v for k, v in spec["dynamic_axes"].items()}
    text = json.dumps(manifest, indent=2)
    (bundle / "manifest.json").write_text(text)
    return json.loads(text)  # as a reader sees it (tuples become lists)


# ------------------------------------------------------------------------------------------- C++ build
def cpp_toolchain_missing() -> Optional[str]:
    """Why the C++ runner cannot be built here, or None."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install cmake g++)"
    if not any(Path(p).is_dir() for p in ("/usr/include/nlohmann", "/usr/local/include/nlohmann")):
        return "nlohmann/json headers not found (apt-get install nlohmann-json3-dev)"
    if not any(Path(p, "stb_image.h").is_file() for p in ("/usr/include/stb", "/usr/local/include/stb")):
        return "stb_image.h not found (apt-get install libstb-dev)"
    return None


def ort_headers_missing() -> Optional[str]:
    env = os.environ.get("ONNXRUNTIME_INCLUDE_DIR")
    candidates = ([Path(env)] if env else []) + [Path("/usr/local/include/onnxruntime"),
                                                  Path("/usr/include/onnxruntime")]
    if any((c / "onnxruntime_cxx_api.h").is_file() for c in candidates):
        return None
    return ("ONNX Runtime C++ headers not found (run export/cpp/scripts/fetch_ort_headers.sh "
            "or set ONNXRUNTIME_INCLUDE_DIR)")


def build_cpp(build_dir: Path, timeout: float = 600.0, options: Sequence[str] = ("-DRSD_WITH_ONNXRUNTIME=ON",)
              ) -> Dict[str, Path]:
    """Configure + build export/cpp (Release; ``options`` pick the backends); returns the executables."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = ["cmake", "-S", str(CPP_DIR), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Release",
                 *options, f"-DPython3_EXECUTABLE={sys.executable}"]
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        configure.append(f"-DONNXRUNTIME_INCLUDE_DIR={os.environ['ONNXRUNTIME_INCLUDE_DIR']}")
    for cmd in (configure, ["cmake", "--build", str(build_dir), "-j", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return {"rsd_upscale": build_dir / "rsd_upscale", "rsd_ops": build_dir / "rsd_ops"}


def save_npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))
    return path


# ------------------------------------------------------------------- Python reference over the bundle
def ort_bundle_backend(bundle: Path, threads: int = 1):
    """The project's ONNX Runtime backend over a bundle's fp32 graphs (CPU), and its manifest."""
    from rsd_deploy.backends.base import create_backend

    backend = create_backend("onnxruntime", export_dir=bundle, precision="fp32", device="cpu",
                             intra_op_threads=threads)
    return backend, backend.manifest


def python_pipeline(bundle: Path, *, tile: Optional[int], overlap: int, seed: int):
    """The project's SRPipeline over ``ort_bundle_backend(bundle)``."""
    from rsd_deploy.models import Schedule
    from rsd_deploy.pipeline.sr_pipeline import SRPipeline
    from rsd_deploy.types import ModelInfo, ModelKind, TileConfig

    backend, manifest = ort_bundle_backend(bundle)
    kind = ModelKind(manifest["model"]["kind"])
    info = ModelInfo(kind=kind, schedule=Schedule.preset(kind.schedule_preset),
                     input_multiple=manifest["preprocess"]["latent_multiple"],
                     noise_channels=manifest["model"]["noise_channels"])
    return SRPipeline(backend, info, TileConfig(tile=tile, overlap=overlap, batch=1), seed=seed)


def global_noise(seed: int, extent, noise_channels: int):
    """The pipeline's position-keyed noise over the latent grid [0, Hn) x [0, Wn) (numpy arrays)."""
    from rsd_deploy.pipeline.noise import draw_region_noise

    noise = draw_region_noise(seed, 0, 0, extent[0], extent[1], noise_channels=noise_channels)
    return noise.prior.numpy(), None if noise.student is None else noise.student.numpy()


def noise_extent(height: int, width: int, tile: Optional[int], overlap: int, multiple: int):
    """(Hn, Wn) of latent grid that every padded tile of the pipeline's plan reads."""
    from rsd_deploy.pipeline.tiling import TilePlan

    plan = TilePlan.build(height, width, tile, overlap)
    up = lambda v: -(-v // multiple) * multiple  # noqa: E731
    return plan.ys[-1] + up(plan.tile_h), plan.xs[-1] + up(plan.tile_w)


# ------------------------------------------------------------------- Triton repository on the CPU
class _PbTensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _PbRequest:
    def __init__(self, tensors: Dict[str, np.ndarray]):
        self.tensors = tensors


class _PbResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


class _PbError(Exception):
    pass


def fake_pb_utils():
    """A stand-in for Triton's ``triton_python_backend_utils`` (the calls our models use)."""
    import types

    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = _PbTensor
    mod.InferenceResponse = _PbResponse
    mod.TritonError = _PbError
    mod.get_input_tensor_by_name = lambda request, name: _PbTensor(name, request.tensors[name])
    return mod


class TritonCpuSimulator:
    """Runs a model repository written by ``write_model_repository`` without a server: configs parsed
    with Triton's model_config.proto, ONNX models through ONNX Runtime (CPU), Python-backend models
    through their ``TritonPythonModel`` with a fake ``triton_python_backend_utils``, ensembles by
    following ``ensemble_scheduling`` (input_map/output_map). Batch axis included, as on a server."""

    def __init__(self, root: Path):
        import importlib.util

        import onnxruntime as ort
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2

        self.root = root
        self.configs = {}
        self.runners = {}
        for cfg_path in sorted(root.glob("*/config.pbtxt")):
            config = text_format.Parse(cfg_path.read_text(), model_config_pb2.ModelConfig())
            self.configs[config.name] = config
            version = cfg_path.parent / "1"
            if config.platform == "onnxruntime_onnx":
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                session = ort.InferenceSession(str(version / "model.onnx"), options,
                                               providers=["CPUExecutionProvider"])
                self.runners[config.name] = (lambda s: lambda feeds: dict(zip(
                    [o.name for o in s.get_outputs()], s.run(None, feeds))))(session)
            elif config.backend == "python":
                sys.modules["triton_python_backend_utils"] = fake_pb_utils()
                spec = importlib.util.spec_from_file_location(f"triton_{config.name}", version / "model.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)  # type: ignore[union-attr]
                model = module.TritonPythonModel()
                model.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True)})
                self.runners[config.name] = (lambda m: self._python_runner(m))(model)

    @staticmethod
    def _python_runner(model):
        def run(feeds):
            (response,) = model.execute([_PbRequest(feeds)])
            if response.error is not None:
                raise RuntimeError(str(response.error))
            return {t.name(): t.as_numpy() for t in response.output_tensors}
        return run

    def infer(self, model: str, feeds: Dict[str, np.ndarray], trace: Optional[dict] = None) -> Dict[str, np.ndarray]:
        config = self.configs[model]
        if config.platform != "ensemble":
            return self.runners[model](feeds)
        tensors = dict(feeds)
        for step in config.ensemble_scheduling.step:
            outputs = self.infer(step.model_name, {k: tensors[v] for k, v in step.input_map.items()})
            for key, name in step.output_map.items():
                tensors[name] = outputs[key]
        if trace is not None:
            trace.update(tensors)
        return {o.name: tensors[o.name] for o in config.output}


# ------------------------------------------------------------------- real (tiny) exports
def export_tiny_bundle(out_dir: Path, fixtures: Path, *, tile: int = 32, overlap: int = 8) -> dict:
    """The official-format tiny RSD student + tiny VQ-f4 fixtures exported with the exporter's own
    graph wrappers and manifest writer (no parity/accuracy/lint passes: those are the exporter's
    tests), so C++/Triton tests run on real model graphs in seconds."""
    import torch

    from rsd_deploy import load_checkpoint
    from rsd_deploy.bundle import manifest as mf
    from rsd_deploy.export.onnx_export import DiffusionConstants, build_specs, export_graph, graph_modules
    from rsd_deploy.models import Schedule

    unet = load_checkpoint(fixtures / "rsd_student_tiny" / "state_dict.pth").eval()
    vq = load_checkpoint(fixtures / "vq_tiny" / "state_dict.pth").eval()
    constants = DiffusionConstants.from_schedule(Schedule.preset("v1"))
    specs = build_specs(unet.config)
    modules = graph_modules(unet, vq, constants)
    out_dir.mkdir(parents=True, exist_ok=True)
    graphs = {}
    with torch.inference_mode(False):
        for name in ("encoder", "denoiser", "decoder"):
            g = export_graph(modules[name], specs[name], out_dir / f"{name}.onnx", export_shape=(1, 32, 32))
            recipe = {"tool": "torch.onnx.export (tests)", "kept_fp32": ["*"]}
            graphs[name] = {"spec": specs[name].to_dict(),
                            "variants": {"fp32": mf.variant_entry(out_dir, g.path.name, list(g.external_data),
                                                                  OPSET, recipe)}}
    manifest = mf.build_manifest(kind="rsd", demo=True, noise_channels=int(unet.config.noise_channels),
                                 unet_checkpoint=None, vq_checkpoint=None, constants=constants,
                                 latent_multiple=int(unet.config.input_multiple), graphs=graphs, tile=tile,
                                 overlap=overlap)
    manifest["accuracy_report"] = None
    mf.write_manifest(out_dir, manifest)
    return json.loads((out_dir / "manifest.json").read_text())


_TINY_EXPORT: Dict[str, Path] = {}


def tiny_export_dir() -> Path:
    """One tiny real export per test session, shared by the C++ and Triton tests (~10 s CPU)."""
    import tempfile

    import pytest

    fixtures = (REPO / ".." / "shared" / "fixtures").resolve()
    if not (fixtures / "rsd_student_tiny" / "state_dict.pth").is_file():
        pytest.skip(f"tiny fixtures absent under {fixtures}")
    if "dir" not in _TINY_EXPORT:
        out = Path(tempfile.mkdtemp(prefix="rsd-tiny-export-")) / "bundle"
        export_tiny_bundle(out, fixtures)
        _TINY_EXPORT["dir"] = out
    return _TINY_EXPORT["dir"]
