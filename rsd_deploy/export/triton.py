"""Triton Inference Server model repository from an ``rsd-export`` bundle.

Layout written into ``triton_dir`` (``name`` defaults to "rsd")::

    rsd_encoder/    config.pbtxt  1/model.onnx | 1/model.plan   VQ encoder
    rsd_denoiser/   config.pbtxt  1/model.onnx | 1/model.plan   one-step denoiser (constants folded in)
    rsd_decoder/    config.pbtxt  1/model.onnx | 1/model.plan   VQ decoder incl. quantiser
    rsd_preprocess/ config.pbtxt  1/model.py                    Python backend: pad, bicubic x4, noise
    rsd_prior/      config.pbtxt  1/model.py                    Python backend: z_t = z_y + prior_std * eps
    rsd_postprocess/config.pbtxt  1/model.py                    Python backend: crop, clamp, uint8
    rsd/            config.pbtxt  1/                            ensemble: LR_IMAGE + SEED -> SR_IMAGE

The networks get ``max_batch_size`` > 0 (the batch axis is implicit, so ``dims`` are [C, -1, -1]),
dynamic batching and GPU instance groups; requests batch when their shapes agree (same-size tiles).
TensorRT plans are used when the bundle has engines of the requested precision for all three
graphs (they must be built for the server's TensorRT version and GPU), ONNX graphs otherwise
(``onnxruntime_onnx``, external weight files copied beside ``model.onnx``). The ensemble wires the
graphs by the tensor roles of the manifest's specs; graph I/O names are read from there.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from rsd_deploy.bundle.manifest import load_manifest
from rsd_deploy.bundle.specs import SUBMODELS, ExportSpec, Role
from rsd_deploy.errors import ConfigError, ManifestError
from rsd_deploy.fileio import sigterm_as_exception

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
PLATFORMS = ("auto", "tensorrt_plan", "onnxruntime_onnx")
INSTANCE_KINDS = ("KIND_GPU", "KIND_CPU", "KIND_AUTO")
#: rsd_deploy/pixels.py: Triton's Python may lack torch and rsd_deploy, so the models import this copy
PIXELS_SOURCE = Path(__file__).resolve().parents[1] / "pixels.py"
_PYTHON_MODELS = {"preprocess": "preprocess_model.py", "prior": "prior_model.py", "postprocess": "postprocess_model.py"}


class Enum(str):
    """A protobuf enum value: written without quotes in text format."""


@dataclass(frozen=True)
class TritonOptions:
    """How to serve the graphs. ``max_batch_size`` None: the engines' profile max batch."""

    precision: str = "fp32"
    platform: str = "auto"
    max_batch_size: Optional[int] = None
    preferred_batch_sizes: Sequence[int] = ()
    max_queue_delay_us: int = 100
    instance_count: int = 1
    instance_kind: str = "KIND_GPU"
    python_instance_count: int = 2  # CPU pre/post-processing instances
    name: str = "rsd"
    overwrite: bool = False

    def validate(self) -> None:
        if self.platform not in PLATFORMS:
            raise ConfigError(f"unknown Triton platform {self.platform!r}; choose one of {', '.join(PLATFORMS)}")
        if self.instance_kind not in INSTANCE_KINDS:
            raise ConfigError(f"unknown instance kind {self.instance_kind!r}; choose one of {', '.join(INSTANCE_KINDS)}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size {self.max_batch_size} must be >= 1 (batching needs a batch axis)")
        if self.max_queue_delay_us < 0 or self.instance_count < 1 or self.python_instance_count < 1:
            raise ConfigError("max_queue_delay_us must be >= 0 and instance counts >= 1")
        if any(b < 1 for b in self.preferred_batch_sizes):
            raise ConfigError(f"preferred batch sizes {list(self.preferred_batch_sizes)} must be >= 1")
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"model name {self.name!r} must be letters, digits, '-' or '_'")


@dataclass
class TritonRepository:
    """What was written: the folder, the ensemble's name and each model's folder."""

    root: Path
    ensemble: str
    platform: str
    models: Dict[str, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------ text format
def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} in protobuf text format")


def to_pbtxt(message: Dict[str, Any], indent: int = 0) -> str:
    """Dict -> protobuf text format (dict: message, list: repeated field, Enum: enum value)."""
    pad = "  " * indent
    lines: List[str] = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, (list, tuple)):
            if value and isinstance(value[0], dict):
                items = ",\n".join(f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value)
                lines.append(f"{pad}{key} [\n{items}\n{pad}]")
            else:
                lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _tensor(name: str, dtype: str, dims: Sequence[int], optional: bool = False) -> Dict[str, Any]:
    t: Dict[str, Any] = {"name": name, "data_type": Enum(dtype), "dims": list(dims)}
    if optional:
        t["optional"] = True
    return t


def _io(spec_tensors: List[dict]) -> List[Dict[str, Any]]:
    """Graph I/O from the manifest spec: fp32 (C, H, W) with dynamic H and W (batch implicit)."""
    return [_tensor(t["name"], "TYPE_FP32", [t["channels"], -1, -1]) for t in spec_tensors]


def _batching(options: TritonOptions, max_batch: int) -> Dict[str, Any]:
    preferred = list(options.preferred_batch_sizes) or sorted({b for b in (max_batch // 2, max_batch) if b >= 1})
    if any(b > max_batch for b in preferred):
        raise ConfigError(f"preferred batch sizes {preferred} exceed max_batch_size {max_batch}")
    return {"preferred_batch_size": preferred, "max_queue_delay_microseconds": int(options.max_queue_delay_us)}


def _parameters(values: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items()]


# ------------------------------------------------------------------------------ model configs
def _graph_config(name: str, platform: str, graph: dict, max_batch: int, options: TritonOptions) -> Dict[str, Any]:
    spec = graph["spec"]
    return {
        "name": name,
        "platform": platform,
        "max_batch_size": max_batch,
        "input": _io(spec["inputs"]),
        "output": _io(spec["outputs"]),
        "dynamic_batching": _batching(options, max_batch),
        "instance_group": [{"count": options.instance_count, "kind": Enum(options.instance_kind)}],
    }


def _preprocess_config(name: str, manifest: dict, max_batch: int, options: TritonOptions) -> Dict[str, Any]:
    nc = int(manifest["model"]["noise_channels"])
    outputs = [_tensor("LQ", "TYPE_FP32", [3, -1, -1]), _tensor("IMAGE", "TYPE_FP32", [3, -1, -1]),
               _tensor("PRIOR_NOISE", "TYPE_FP32", [3, -1, -1])]
    if nc:
        outputs.append(_tensor("NOISE", "TYPE_FP32", [nc, -1, -1]))
    outputs.append(_tensor("ORIG_SIZE", "TYPE_INT32", [2]))
    up = manifest["preprocess"]["upsample"]
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [_tensor("LR_IMAGE", "TYPE_UINT8", [-1, -1, 3]), _tensor("SEED", "TYPE_INT64", [1])],
        "output": outputs,
        "dynamic_batching": _batching(options, max_batch),
        "instance_group": [{"count": options.python_instance_count, "kind": Enum("KIND_CPU")}],
        "parameters": _parameters({"latent_multiple": manifest["preprocess"]["latent_multiple"],
                                   "sf": manifest["diffusion"]["sf"], "cubic_a": up["a"], "noise_channels": nc}),
    }


def _prior_config(name: str, manifest: dict, max_batch: int, options: TritonOptions) -> Dict[str, Any]:
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [_tensor("Z_Y", "TYPE_FP32", [3, -1, -1]), _tensor("PRIOR_NOISE", "TYPE_FP32", [3, -1, -1])],
        "output": [_tensor("Z_T", "TYPE_FP32", [3, -1, -1])],
        "dynamic_batching": _batching(options, max_batch),
        "instance_group": [{"count": options.python_instance_count, "kind": Enum("KIND_CPU")}],
        "parameters": _parameters({"prior_std": repr(float(manifest["diffusion"]["prior_std"]))}),
    }


def _postprocess_config(name: str, manifest: dict, max_batch: int, options: TritonOptions) -> Dict[str, Any]:
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [_tensor("SR", "TYPE_FP32", [3, -1, -1]), _tensor("ORIG_SIZE", "TYPE_INT32", [2])],
        "output": [_tensor("SR_IMAGE", "TYPE_UINT8", [-1, -1, 3])],
        "dynamic_batching": _batching(options, max_batch),
        "instance_group": [{"count": options.python_instance_count, "kind": Enum("KIND_CPU")}],
        "parameters": _parameters({"sf": manifest["diffusion"]["sf"]}),
    }


def _step(model: str, inputs: Dict[str, str], outputs: Dict[str, str]) -> Dict[str, Any]:
    return {"model_name": model, "model_version": -1,
            "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
            "output_map": [{"key": k, "value": v} for k, v in outputs.items()]}


def _ensemble_config(names: Dict[str, str], manifest: dict, max_batch: int) -> Dict[str, Any]:
    """The ensemble; its internal tensors are named by role, the graphs' I/O names come from the specs."""
    nc = int(manifest["model"]["noise_channels"])
    specs = {g: ExportSpec.from_dict(manifest["graphs"][g]["spec"]) for g in SUBMODELS}
    enc, den, dec = specs["encoder"], specs["denoiser"], specs["decoder"]
    pre_out = {"LQ": Role.LQ, "IMAGE": Role.LR_UPSAMPLED, "PRIOR_NOISE": "prior_eps", "ORIG_SIZE": "orig_size"}
    den_in = {den.name_of(Role.Z_T): Role.Z_T, den.name_of(Role.LQ): Role.LQ}
    if nc:
        pre_out["NOISE"] = Role.STUDENT_NOISE
        den_in[den.name_of(Role.STUDENT_NOISE)] = Role.STUDENT_NOISE
    return {
        "name": names["ensemble"],
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [_tensor("LR_IMAGE", "TYPE_UINT8", [-1, -1, 3]), _tensor("SEED", "TYPE_INT64", [1])],
        "output": [_tensor("SR_IMAGE", "TYPE_UINT8", [-1, -1, 3])],
        "ensemble_scheduling": {"step": [
            _step(names["preprocess"], {"LR_IMAGE": "LR_IMAGE", "SEED": "SEED"}, pre_out),
            _step(names["encoder"], {enc.name_of(Role.LR_UPSAMPLED): Role.LR_UPSAMPLED},
                  {enc.name_of(Role.LATENT): Role.LATENT}),
            _step(names["prior"], {"Z_Y": Role.LATENT, "PRIOR_NOISE": "prior_eps"}, {"Z_T": Role.Z_T}),
            _step(names["denoiser"], den_in, {den.name_of(Role.X0): Role.X0}),
            _step(names["decoder"], {dec.name_of(Role.X0): Role.X0}, {dec.name_of(Role.SR_IMAGE): Role.SR_IMAGE}),
            _step(names["postprocess"], {"SR": Role.SR_IMAGE, "ORIG_SIZE": "orig_size"}, {"SR_IMAGE": "SR_IMAGE"}),
        ]},
    }


# ------------------------------------------------------------------------------ files
def _place(src: Path, dst: Path) -> None:
    """Hard-link when possible (graphs can be ~0.5 GB), copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _choose_platform(manifest: dict, options: TritonOptions) -> str:
    engines = manifest.get("engines") or {}
    have_plans = all(options.precision in (engines.get(g) or {}) for g in SUBMODELS)
    if options.platform == "tensorrt_plan" and not have_plans:
        raise ManifestError(f"the bundle has no {options.precision} TensorRT engines for all of "
                            f"{', '.join(SUBMODELS)}; build them (rsd-export --engines) or use onnxruntime_onnx")
    if options.platform == "auto":
        return "tensorrt_plan" if have_plans else "onnxruntime_onnx"
    return options.platform


@sigterm_as_exception()  # SIGTERM removes the staging folder as Ctrl-C does
def write_model_repository(export_dir: PathLike, triton_dir: PathLike, options: Optional[TritonOptions] = None,
                           **overrides: Any) -> TritonRepository:
    """Write a Triton model repository for the bundle in ``export_dir`` into ``triton_dir``.

    Args:
        export_dir: an ``rsd-export`` output folder (validated with :func:`load_manifest`).
        triton_dir: the model repository to create (must be absent or empty unless ``overwrite``;
            then only this ensemble's seven model folders are replaced).
        options / overrides: :class:`TritonOptions` (keyword overrides win).

    Returns:
        the written :class:`TritonRepository`.
    """
    opts = options or TritonOptions()
    if overrides:
        opts = TritonOptions(**{**opts.__dict__, **overrides})
    opts.validate()
    export_dir, triton_dir = Path(export_dir), Path(triton_dir)
    manifest = load_manifest(export_dir)
    graphs = manifest["graphs"]
    for g in SUBMODELS:
        if opts.precision not in graphs[g]["variants"]:
            raise ManifestError(f"{export_dir}: no {opts.precision} graph for {g} (has {sorted(graphs[g]['variants'])}); "
                                f"export it (rsd-export --{opts.precision}) or choose another precision")
    platform = _choose_platform(manifest, opts)
    profile_batch = min(int(graphs[g]["spec"]["profile"]["max"][0]) for g in SUBMODELS)
    max_batch = opts.max_batch_size or profile_batch
    if platform == "tensorrt_plan" and max_batch > profile_batch:
        raise ConfigError(f"max_batch_size {max_batch} exceeds the engines' profile max batch {profile_batch}; "
                          f"rebuild the engines with a larger --max-shape batch or lower max_batch_size")
    if triton_dir.exists() and not triton_dir.is_dir():
        raise ConfigError(f"{triton_dir} exists and is not a folder; choose another --triton folder")

    names = {"ensemble": opts.name, **{k: f"{opts.name}_{k}" for k in (*SUBMODELS, *_PYTHON_MODELS)}}
    existing = [n for n in names.values() if (triton_dir / n).exists()]
    if triton_dir.is_dir() and any(triton_dir.iterdir()) and not opts.overwrite:
        raise ConfigError(f"{triton_dir} is not empty; choose a new --triton folder or pass overwrite=True "
                          f"(replaces only {', '.join(sorted(names.values()))})")
    triton_dir.mkdir(parents=True, exist_ok=True)
    repo = TritonRepository(root=triton_dir, ensemble=names["ensemble"], platform=platform)
    staging = Path(tempfile.mkdtemp(prefix=".rsd-triton-", dir=triton_dir))  # right before `try`: SIGTERM cleans it
    try:
        configs: Dict[str, Dict[str, Any]] = {}
        for g in SUBMODELS:
            version = staging / names[g] / "1"
            version.mkdir(parents=True)
            if platform == "tensorrt_plan":
                _place(export_dir / manifest["engines"][g][opts.precision]["file"], version / "model.plan")
            else:
                variant = graphs[g]["variants"][opts.precision]
                _place(export_dir / variant["file"], version / "model.onnx")
                for extra in variant.get("external_data") or []:  # referenced by name from the graph
                    _place(export_dir / extra, version / Path(extra).name)
            configs[names[g]] = _graph_config(names[g], platform, graphs[g], max_batch, opts)
        here = Path(__file__).resolve().parent / "triton_python"
        for role, source in _PYTHON_MODELS.items():
            version = staging / names[role] / "1"
            version.mkdir(parents=True)
            shutil.copy2(here / source, version / "model.py")
            shutil.copy2(PIXELS_SOURCE, version / "pixels.py")  # numpy-only pixel maths, verbatim
        configs[names["preprocess"]] = _preprocess_config(names["preprocess"], manifest, max_batch, opts)
        configs[names["prior"]] = _prior_config(names["prior"], manifest, max_batch, opts)
        configs[names["postprocess"]] = _postprocess_config(names["postprocess"], manifest, max_batch, opts)
        (staging / names["ensemble"] / "1").mkdir(parents=True)  # ensembles need an (empty) version folder
        configs[names["ensemble"]] = _ensemble_config(names, manifest, max_batch)
        header = (f"# written by rsd-deploy from {export_dir.name}/manifest.json "
                  f"({manifest['model']['kind']}, {opts.precision}, {platform})\n")
        for model, config in configs.items():
            (staging / model / "config.pbtxt").write_text(header + to_pbtxt(config))
        # move into place model by model (same filesystem: renames)
        trash = Path(tempfile.mkdtemp(prefix=".rsd-triton-old-", dir=triton_dir))
        for model in configs:
            if model in existing:
                os.replace(triton_dir / model, trash / model)
            os.replace(staging / model, triton_dir / model)
            repo.models[model] = triton_dir / model
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Triton repository %s: ensemble %r (%s, %s, max_batch_size %d)", triton_dir, names["ensemble"],
                platform, opts.precision, max_batch)
    return repo
