"""TensorRT plans on disk: their names, sidecars and cache-key digest, and whether a plan may be
loaded on this machine (checked *before* TensorRT sees the bytes).

* **File name** ``denoiser.fp16.sm90.trt10.13.1a2b3c4d.plan``: what it is, for which GPU and
  TensorRT, and the first 8 hex digits of the sha256 of its cache key. The full key is in the
  sidecar ``<plan>.json`` and in ``manifest.json`` under ``engines``.
* **Stale or foreign plans** (other TensorRT version, GPU, or a changed ONNX) are refused in one line
  with the rebuild command (:class:`~rsd_deploy.errors.EngineMismatchError`).
* **Portable plans**: version-compatible plans load on the same or a newer TensorRT and need host code allowed (or, when built without the lean runtime, a lean
  runtime loaded from a library); hardware-compatible plans load on any sm80+ GPU except on
  JetPack / DRIVE OS, where TensorRT does not support hardware compatibility.

The build side (:mod:`rsd_deploy.export.engine_build`) writes what this module reads.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from rsd_deploy.backends.trt_env import GpuIdentity, parse_version
from rsd_deploy.errors import EngineMismatchError

#: when a submodel has no graph at the requested precision, the engine of the next one is used
PRECISION_FALLBACK = {"int8": ("int8", "fp16", "fp32"), "fp16": ("fp16", "fp32"), "fp32": ("fp32",)}
SIDECAR_SUFFIX = ".json"
KEY_VERSION = 1  # bump when the key layout changes: every older engine becomes stale

#: "Hardware compatibility is only supported for Ampere and later ... not supported on NVIDIA DRIVE
#: OS or JetPack" (TensorRT developer guide, Hardware Compatibility)
HARDWARE_COMPAT_REFUSED = ("hardware-compatible TensorRT plans are not supported on JetPack / DRIVE OS "
                           "(TensorRT: Ampere+ discrete GPUs only)")


def rebuild_command(onnx_dir: Path) -> str:
    return f"rsd-export --build-engine {onnx_dir}"


def sidecar_path(plan_path: Path) -> Path:
    return plan_path.with_name(plan_path.name + SIDECAR_SUFFIX)


def key_digest(key: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a cache key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def engine_file_name(submodel: str, precision: str, gpu: GpuIdentity, tensorrt_version: str, digest: str) -> str:
    """'denoiser.fp16.sm90.trt10.13.1a2b3c4d.plan': what it is, for which GPU/TensorRT, and the key."""
    major_minor = ".".join(str(v) for v in parse_version(tensorrt_version)[:2])
    return f"{submodel}.{precision}.{gpu.sm}.trt{major_minor}.{digest[:8]}.plan"


@dataclass(frozen=True)
class PlanRuntime:
    """What deserialising a plan needs besides TensorRT itself (from its sidecar's build flags)."""

    host_code: bool = False  # version-compatible: the plan carries (or calls) lean-runtime host code
    lean_runtime: bool = False  # built with EXCLUDE_LEAN_RUNTIME: load the lean runtime library first
    built_with: str = ""  # TensorRT version that built the plan (the lean library must match it)

    @classmethod
    def from_sidecar(cls, sidecar: Mapping[str, Any]) -> "PlanRuntime":
        key = sidecar.get("cache_key", {})
        build = key.get("build", {})
        compatible = bool(build.get("version_compatible"))
        return cls(host_code=compatible, lean_runtime=compatible and bool(build.get("exclude_lean_runtime")),
                   built_with=str(key.get("tensorrt", "")))


def check_engine(plan_path: Path, *, tensorrt_version: str, gpu: GpuIdentity,
                 onnx_sha256: Optional[str] = None, rebuild_dir: Optional[Path] = None,
                 verify_plan_sha256: bool = True) -> Dict[str, Any]:
    """Check a plan against this machine *before* deserialising it; returns its sidecar.

    Raises EngineMismatchError (one line, with the rebuild command) when the plan or its sidecar is
    missing, the plan was built by another TensorRT version (unless version-compatible and older), for another GPU (unless hardware-compatible, this GPU is sm80+ and
    not a JetPack / DRIVE one), from another ONNX graph (when ``onnx_sha256`` is given), or when the
    plan bytes no longer match the sidecar.
    """
    folder = rebuild_dir if rebuild_dir is not None else plan_path.parent
    fix = f"rebuild with `{rebuild_command(folder)}`"
    if not plan_path.is_file():
        raise EngineMismatchError(f"engine {plan_path} is missing; {fix}")
    side = sidecar_path(plan_path)
    try:
        sidecar = json.loads(side.read_text())
        key = sidecar["cache_key"]
        built_trt = str(key["tensorrt"])
        built_gpu = key["gpu"]
        built_cc = tuple(int(v) for v in built_gpu["compute_capability"])
        build = key["build"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineMismatchError(
            f"engine {plan_path.name} has no readable sidecar {side.name} ({type(exc).__name__}), so its "
            f"TensorRT version and GPU are unknown; {fix}"
        ) from exc

    problems: List[str] = []
    if key.get("key_version") != KEY_VERSION:
        problems.append(f"cache key version {key.get('key_version')} != {KEY_VERSION}")
    installed, built = parse_version(tensorrt_version), parse_version(built_trt)
    if build.get("version_compatible"):
        # version-compatible plans run on the same or a later TensorRT, never an older one
        # (TensorRT 11.1 guide, Engine Compatibility: "engines built with TensorRT 10 work with 11")
        if installed < built:
            problems.append(f"built with TensorRT {built_trt}, newer than the installed {tensorrt_version}")
    elif built_trt != tensorrt_version:
        problems.append(f"built with TensorRT {built_trt} but {tensorrt_version} is installed")
    here = f"{gpu.name} ({gpu.sm})"
    there = f"{built_gpu.get('name')} (sm{built_cc[0]}{built_cc[1]})"
    if build.get("hardware_compatible"):
        if gpu.embedded:
            problems.append(f"{HARDWARE_COMPAT_REFUSED}, this is {here}")
        elif gpu.compute_capability < (8, 0):
            problems.append(f"hardware-compatible plans need an sm80+ GPU, this is {here}")
    elif built_cc != gpu.compute_capability or built_gpu.get("name") != gpu.name:
        problems.append(f"built for {there} but this GPU is {here}")
    if onnx_sha256 is not None and key.get("onnx_sha256") != onnx_sha256:
        problems.append("its ONNX graph changed since the build (sha256 differs)")
    if verify_plan_sha256 and not problems and sidecar.get("sha256") != sha256_files([plan_path]):
        problems.append("the plan file does not match its sidecar (modified or partial)")
    if problems:
        raise EngineMismatchError(f"engine {plan_path.name} is stale: {'; '.join(problems)}; {fix}")
    return dict(sidecar)
