"""Build TensorRT engines from an ``rsd-export`` folder: which plans, their cache keys, sidecars.

The builder calls are in :mod:`rsd_deploy.export.trt_build` and the inspector gate in
:mod:`rsd_deploy.export.trt_inspect`; this module decides *what* to build and whether an existing
engine may be reused:

* **Cache key** - everything that changes a plan: ONNX sha256 (and its external data and source
  checkpoint), precision and precision recipe, the optimisation profile, TensorRT version, GPU
  name and compute capability, and the build flags (workspace, optimisation level, TF32,
  version/hardware compatibility). Its sha256 prefix is in the engine file name
  (:func:`rsd_deploy.backends.trt_plans.engine_file_name`), the full key in the sidecar and in
  ``manifest.json`` under ``engines``.
* **Stale or foreign engines** are detected from the sidecar before deserialising
  (:func:`rsd_deploy.backends.trt_plans.check_engine`, shared with the runtime).
* Plans, sidecars, the timing cache and the manifest are written atomically (temp file + os.replace).
* Refused up front: hardware-compatible plans on JetPack / DRIVE OS (TensorRT does not support
  hardware compatibility there).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tqdm import tqdm

from rsd_deploy.backends import trt_env
from rsd_deploy.backends.trt_env import GpuIdentity, tensorrt_status
from rsd_deploy.backends.trt_plans import (
    HARDWARE_COMPAT_REFUSED,
    KEY_VERSION,
    PRECISION_FALLBACK,
    PlanRuntime,
    check_engine,
    engine_file_name,
    key_digest,
    rebuild_command,
    sha256_files,
    sidecar_path,
)
from rsd_deploy.bundle.specs import SUBMODELS, ShapeProfile
from rsd_deploy.errors import ConfigError, EngineMismatchError, ExportError, ManifestError
from rsd_deploy.export import trt_build, trt_inspect
from rsd_deploy.export.trt_build import BuilderFlags, BuildSettings
from rsd_deploy.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

__all__ = [
    "EngineBuildOptions", "EngineJob", "build_engines", "check_engine", "engine_cache_key", "engine_file_name",
    "rebuild_command", "tensorrt_status", "PRECISION_FALLBACK",
]

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineBuildOptions(BuilderFlags):
    """How to build engines (``rsd-export --build-engine`` options); all of it is in the cache key.

    The builder settings (workspace, optimisation level, TF32, portability) are the fields of
    :class:`~rsd_deploy.export.trt_build.BuilderFlags`. ``profile`` overrides the export spec's
    (batch, latent_h, latent_w) min/opt/max for every submodel (``--min-shape/--opt-shape/--max-shape``).
    """

    profile: Optional[ShapeProfile] = None
    submodels: Tuple[str, ...] = SUBMODELS
    timing_cache_dir: Optional[Path] = None  # default: the export folder
    min_half_share: float = 0.10  # an "fp16" engine with fewer half layers than this fails the build
    force: bool = False  # rebuild even when a matching engine exists

    def validate(self) -> None:
        """Raise ConfigError naming the bad option."""
        self.validate_flags()
        if not 0.0 <= self.min_half_share <= 1.0:
            raise ConfigError(f"min_half_share must be in [0, 1], got {self.min_half_share}")
        unknown = [s for s in self.submodels if s not in SUBMODELS]
        if unknown:
            raise ConfigError(f"unknown submodel(s) {unknown}; choose from {list(SUBMODELS)}")


@dataclass(frozen=True)
class EngineJob:
    """One engine to build or reuse: a submodel graph at one precision, with its cache key."""

    submodel: str
    precision: str
    onnx_path: Path
    settings: BuildSettings
    cache_key: Dict[str, Any] = field(hash=False, compare=False)
    plan_path: Path

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.plan_path)

    @property
    def digest(self) -> str:
        return key_digest(self.cache_key)


def engine_cache_key(*, submodel: str, precision: str, onnx_sha256: str, external_data_sha256: Optional[str],
                     precision_recipe: Mapping[str, Any], checkpoints: Mapping[str, Optional[str]],
                     settings: BuildSettings, tensorrt_version: str, gpu: GpuIdentity) -> Dict[str, Any]:
    """Everything that changes the plan, as a JSON-ready dict (see the module docstring)."""
    return {
        "key_version": KEY_VERSION,
        "submodel": submodel,
        "precision": precision,
        "onnx_sha256": onnx_sha256,
        "external_data_sha256": external_data_sha256,
        "precision_recipe": json.loads(json.dumps(precision_recipe, sort_keys=True, default=str)),
        "checkpoints": dict(checkpoints),
        "build": settings.to_key(),
        "tensorrt": tensorrt_version,
        "gpu": {"name": gpu.name, "compute_capability": list(gpu.compute_capability)},
    }


def timing_cache_path(folder: Path, gpu: GpuIdentity, tensorrt_version: str) -> Path:
    """Tactic timings are only valid for one GPU model and TensorRT version: key the file by both."""
    gpu_slug = "".join(c if c.isalnum() else "-" for c in gpu.name.lower()).strip("-")
    return folder / f"timing_cache.{gpu_slug}.{gpu.sm}.trt{tensorrt_version}.bin"


def trt_plan_sha256(path: Path) -> str:
    return sha256_files([path])


# --------------------------------------------------------------------------- build


def _load_manifest(onnx_dir: Path) -> Dict[str, Any]:
    from rsd_deploy.bundle.manifest import load_manifest

    return load_manifest(onnx_dir, check_files=True, verify_sha256=False)


def plan_jobs(onnx_dir: Path, manifest: Mapping[str, Any], precisions: Sequence[str],
              options: EngineBuildOptions, tensorrt_version: str, gpu: GpuIdentity) -> List[EngineJob]:
    """The engines ``build_engines`` would build: one per (submodel, precision) with a graph.

    A submodel without a graph at a requested precision is skipped with a warning (the backend
    falls back along PRECISION_FALLBACK); a precision no submodel has is an error.
    """
    from rsd_deploy.bundle.specs import ExportSpec

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ConfigError(f"unknown engine precision(s) {unknown or list(precisions)}; choose from {list(PRECISIONS)}")
    model = manifest.get("model", {})
    checkpoints = {
        name: (model.get(f"{name}_checkpoint") or {}).get("sha256") for name in ("unet", "vq")
    }
    jobs: List[EngineJob] = []
    for precision in precisions:
        found = 0
        for submodel in options.submodels:
            graph = manifest["graphs"].get(submodel)
            if graph is None:
                raise ManifestError(f"{onnx_dir}: manifest has no {submodel} graph; re-run rsd-export")
            variant = graph["variants"].get(precision)
            if variant is None:
                log.warning("%s has no %s graph; the %s backend will use a higher-precision %s engine",
                            submodel, precision, precision, submodel)
                continue
            found += 1
            onnx_path = onnx_dir / variant["file"]
            onnx_sha = trt_plan_sha256(onnx_path)
            if onnx_sha != variant["sha256"]:
                raise ManifestError(f"{onnx_path} does not match its sha256 in manifest.json (modified or partial); "
                                    f"re-run rsd-export -o {onnx_dir}")
            external = [onnx_dir / f for f in variant.get("external_data", [])]
            spec = ExportSpec.from_dict(graph["spec"])
            profile = spec.trt_profile(options.profile)  # ShapeError if not multiples of spec.multiple
            settings = BuildSettings(
                profile={name: (tuple(a), tuple(b), tuple(c)) for name, (a, b, c) in profile.items()},
                flags=options.builder_flags(),
            )
            key = engine_cache_key(
                submodel=submodel, precision=precision, onnx_sha256=onnx_sha,
                external_data_sha256=sha256_files(external) if external else None,
                precision_recipe=variant.get("precision_recipe", {}), checkpoints=checkpoints,
                settings=settings, tensorrt_version=tensorrt_version, gpu=gpu,
            )
            name = engine_file_name(submodel, precision, gpu, tensorrt_version, key_digest(key))
            jobs.append(EngineJob(submodel, precision, onnx_path, settings, key, onnx_dir / name))
        if found == 0:
            raise ExportError(f"{onnx_dir} has no {precision} graphs; export them first with "
                              f"`rsd-export --{precision} -o {onnx_dir}`" if precision != "fp32" else
                              f"{onnx_dir} has no fp32 graphs; re-run `rsd-export -o {onnx_dir}`")
    return jobs


def _reusable(job: EngineJob, tensorrt_version: str, gpu: GpuIdentity) -> Optional[Dict[str, Any]]:
    """The sidecar of an existing engine with exactly this cache key, else None."""
    if not job.plan_path.is_file():
        return None
    try:
        sidecar = check_engine(job.plan_path, tensorrt_version=tensorrt_version, gpu=gpu,
                               onnx_sha256=job.cache_key["onnx_sha256"])
    except EngineMismatchError as exc:
        log.info("not reusing %s: %s", job.plan_path.name, exc)
        return None
    return sidecar if sidecar.get("cache_key") == job.cache_key else None


def _opt_shapes(settings: BuildSettings) -> Dict[str, Tuple[int, ...]]:
    return {name: tuple(shapes[1]) for name, shapes in settings.profile.items()}


def build_engine(job: EngineJob, options: EngineBuildOptions, timing_cache: Optional[Path]) -> Dict[str, Any]:
    """Build one engine, check its layer precisions, write plan + sidecar atomically; returns the sidecar."""
    from rsd_deploy.bundle.manifest import utc_now
    from rsd_deploy.fileio import atomic_write_json

    log.info("building %s from %s", job.plan_path.name, job.onnx_path.name)
    plan = trt_build.build_serialized_engine(job.onnx_path, job.settings, timing_cache)
    summary = trt_inspect.inspect_plan(plan, _opt_shapes(job.settings),
                                       PlanRuntime.from_sidecar({"cache_key": job.cache_key}))
    log.info("%s layers: %s", job.plan_path.name, summary.to_dict())
    trt_inspect.check_engine_precision(summary, job.precision, job.plan_path.name, options.min_half_share)
    atomic_write_bytes(job.plan_path, plan)
    sidecar = {
        "file": job.plan_path.name,
        "sha256": hashlib.sha256(plan).hexdigest(),
        "bytes": len(plan),
        "onnx": job.onnx_path.name,
        "cache_key": job.cache_key,
        "built_utc": utc_now(),
        "layer_precisions": summary.to_dict(),
        "io_tensors": list(summary.io_tensors),
    }
    # sidecar last: a plan without a sidecar is never trusted, so a crash in between is safe
    atomic_write_json(job.sidecar_path, sidecar)
    return sidecar


def _update_manifest(onnx_dir: Path, entries: Mapping[Tuple[str, str], Mapping[str, Any]], tensorrt_version: str) -> None:
    from rsd_deploy.bundle.manifest import MANIFEST_NAME, write_manifest

    path = onnx_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    engines = manifest.get("engines") or {}
    for (submodel, precision), sidecar in entries.items():
        engines.setdefault(submodel, {})[precision] = {
            "file": sidecar["file"], "sha256": sidecar["sha256"],
            "cache_key": sidecar["cache_key"], "built_utc": sidecar["built_utc"],
        }
    manifest["engines"] = engines
    manifest.setdefault("versions", {})["tensorrt"] = tensorrt_version
    write_manifest(onnx_dir, manifest)


def build_engines(onnx_dir: Path, precisions: Sequence[str],
                  options: EngineBuildOptions = EngineBuildOptions()) -> List[Path]:
    """Build (or reuse) TensorRT engines for every graph in ``onnx_dir`` at ``precisions``.

    Reads ``onnx_dir/manifest.json``, writes ``<submodel>.<precision>.<sm>.trt<ver>.<key8>.plan``
    plus a sidecar beside the graphs, and records them under ``engines`` in the manifest
    (atomically). Returns the plan paths. Raises BackendUnavailableError without TensorRT or a GPU,
    EnginePrecisionError when an engine lost its precision, ExportError when a build fails.
    """
    options.validate()
    onnx_dir = Path(onnx_dir)
    available, reason = tensorrt_status()
    if not available:
        from rsd_deploy.errors import BackendUnavailableError

        raise BackendUnavailableError(
            f"no TensorRT engines built: {reason}; on a GPU machine run `{rebuild_command(onnx_dir)}`"
        )
    tensorrt_version = trt_env.tensorrt_version()
    gpu = trt_env.current_gpu(trt_env.CUDA.current_device())  # TensorRT builds on the current device
    if options.hardware_compatible and gpu.embedded:
        raise ConfigError(f"{HARDWARE_COMPAT_REFUSED}; this is {gpu.name} ({gpu.sm}): build without "
                          "hardware_compatible on this device")
    manifest = _load_manifest(onnx_dir)
    jobs = plan_jobs(onnx_dir, manifest, precisions, options, tensorrt_version, gpu)
    cache_file = timing_cache_path(Path(options.timing_cache_dir or onnx_dir), gpu, tensorrt_version)

    built: List[Path] = []
    for job in tqdm(jobs, desc="TensorRT engines", unit="engine"):
        sidecar = None if options.force else _reusable(job, tensorrt_version, gpu)
        if sidecar is not None:
            log.info("cache hit: %s", job.plan_path.name)
        else:
            sidecar = build_engine(job, options, cache_file)
        built.append(job.plan_path)
        # record each engine as soon as it exists: an interrupted run keeps what it built
        _update_manifest(onnx_dir, {(job.submodel, job.precision): sidecar}, tensorrt_version)
    return built
