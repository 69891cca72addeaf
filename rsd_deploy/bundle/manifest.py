"""``manifest.json`` of a bundle (the folder ``rsd-export`` writes): build, write, read, validate.

The one manifest module: the exporter and the engine builder write through it, every runtime
(ONNX Runtime and TensorRT backends, the Triton writer; the C++ runner mirrors its reader) reads
through it. It imports no export tooling, so a backend can load a bundle with only its runtime.

The format is described by ``manifest.schema.json`` beside this file (JSON Schema draft 2020-12,
``schema_version`` MAJOR.MINOR). Reading validates in two layers:

1. the JSON Schema (types, required keys, enums, tensor roles), through ``jsonschema`` when it is
   installed (only the required top-level keys otherwise);
2. cross-field checks a schema cannot express, tied to the single sources of truth: diffusion
   constants agree with each other, graph I/O (roles, channels, scales) matches
   :mod:`rsd_deploy.bundle.specs`, referenced files exist (and, on request, match their sha256).

Version 2.0: the denoiser takes the prior sample ``z_t`` (role z_t) instead of z_y + prior_noise,
and every graph tensor carries its role. 1.x bundles are refused with "re-export".
Every failure raises :class:`rsd_deploy.errors.ManifestError` with a one-line message.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from rsd_deploy.bundle.specs import SUBMODELS, ExportSpec, graph_specs
from rsd_deploy.errors import ManifestError
from rsd_deploy.fileio import atomic_write_json, sha256_file

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = "2.0"
SUPPORTED_MAJOR = 2
SCHEMA_PATH = Path(__file__).resolve().parent / "manifest.schema.json"
ACCURACY_JSON = "accuracy.json"
ACCURACY_MD = "accuracy.md"
# relative tolerance for derived constants written as JSON floats (rounding in the writer)
_CONSTANT_RTOL = 1e-4

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------------- writing
def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def library_versions() -> Dict[str, Optional[str]]:
    import onnx
    import onnxruntime
    import torch

    try:
        import tensorrt  # type: ignore[import-not-found]

        trt: Optional[str] = str(tensorrt.__version__)
    except Exception:  # not installed, or installed without a usable CUDA
        trt = None
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "tensorrt": trt}


def checkpoint_entry(path: Optional[Path]) -> Optional[Dict[str, str]]:
    if path is None:
        return None
    return {"path": str(path), "sha256": sha256_file(Path(path))}


def variant_entry(export_dir: Path, file: str, external_data: List[str], opset: int, recipe: dict) -> dict:
    """One ``graphs.<name>.variants.<precision>`` entry; sizes and hashes are read from disk."""
    path = export_dir / file
    total = path.stat().st_size + sum((export_dir / f).stat().st_size for f in external_data)
    return {"file": file, "sha256": sha256_file(path), "external_data": list(external_data), "bytes": int(total),
            "opset": int(opset), "precision_recipe": recipe}


def build_manifest(*, kind: str, demo: bool, noise_channels: int, unet_checkpoint: Optional[Path],
                   vq_checkpoint: Optional[Path], constants, latent_multiple: int, graphs: Dict[str, dict],
                   tile: int = 64, overlap: int = 16, toolkit_version: str = "0.1.0",
                   engines: Optional[dict] = None) -> dict:
    """Assemble the manifest dict. ``graphs[name] = {"spec": ExportSpec.to_dict(), "variants": {...}}``;
    ``constants`` is an :class:`onnx_export.DiffusionConstants`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "toolkit": {"name": "rsd-deploy", "version": toolkit_version},
        "created_utc": utc_now(),
        "model": {"kind": kind, "demo": bool(demo), "noise_channels": int(noise_channels),
                  "unet_checkpoint": checkpoint_entry(unet_checkpoint),
                  "vq_checkpoint": checkpoint_entry(vq_checkpoint)},
        "diffusion": {"steps": int(constants.steps), "timestep": int(constants.timestep),
                      "kappa": float(constants.kappa), "sqrt_eta_T": float(constants.sqrt_eta_T),
                      "prior_std": float(constants.prior_std), "input_scale": float(constants.input_scale),
                      "scale_factor": 1.0, "sf": 4},
        "preprocess": {"color": "RGB", "layout": "NCHW", "range": [-1.0, 1.0], "latent_multiple": int(latent_multiple),
                       "pad": "reflect, replicate when a side is too small",
                       "upsample": {"mode": "bicubic", "a": -0.75, "align_corners": False, "antialias": False,
                                    "where": "host"}},
        "postprocess": {"clamp": [-1.0, 1.0], "to_uint8": "round((x + 1) * 127.5)"},
        "tiling": {"tile": int(tile), "overlap": int(overlap), "units": "LR pixels", "blend": "feathered"},
        "graphs": graphs,
        "engines": engines or {},
        "accuracy_report": ACCURACY_JSON,
        "versions": library_versions(),
    }


def write_manifest(bundle_dir: PathLike, manifest: Dict[str, Any]) -> Path:
    """Validate ``manifest`` and write it atomically as ``<bundle_dir>/manifest.json``."""
    path = Path(bundle_dir) / MANIFEST_NAME
    validate_manifest(json.loads(json.dumps(manifest)), where=str(path))
    return atomic_write_json(path, manifest)


# ---------------------------------------------------------------------------------- reading
@lru_cache(maxsize=1)
def manifest_schema() -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) of manifest.json, as a dict."""
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def _json_path(parts: Any) -> str:
    path = "$"
    for p in parts:
        path += f"[{p}]" if isinstance(p, int) else f".{p}"
    return path


def _check_schema(manifest: Dict[str, Any], where: str) -> None:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - depends on the environment
        logger.warning("jsonschema is not installed: only cross-field checks ran on %s "
                       "(pip install jsonschema for full validation)", where)
        missing = [k for k in manifest_schema()["required"] if k not in manifest]
        if missing:
            raise ManifestError(f"{where}: manifest lacks required keys {missing}; re-export the bundle with rsd-export")
        return
    validator = jsonschema.Draft202012Validator(manifest_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
        raise ManifestError(f"{where}: manifest does not match schema {SCHEMA_VERSION} at "
                            f"{_json_path(error.absolute_path)}: {message}; re-export the bundle with rsd-export")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_CONSTANT_RTOL, abs_tol=1e-9)


def _check_version(manifest: Dict[str, Any], where: str) -> None:
    version = manifest.get("schema_version")
    if not isinstance(version, str):
        raise ManifestError(f"{where}: manifest has no schema_version string; re-export the bundle with rsd-export")
    major = version.split(".")[0]
    if not major.isdigit() or int(major) != SUPPORTED_MAJOR:
        raise ManifestError(f"{where}: manifest schema_version {version!r} is not supported by this rsd-deploy "
                            f"(reads {SUPPORTED_MAJOR}.x); re-export the bundle with this rsd-export "
                            f"(or use the rsd-deploy release that wrote it)")


def _check_diffusion(d: Dict[str, Any], where: str) -> None:
    if d["timestep"] != d["steps"] - 1:
        raise ManifestError(f"{where}: diffusion.timestep {d['timestep']} must be steps-1 = {d['steps'] - 1} "
                            "(the graph runs the last step); re-export the bundle")
    prior_std = d["kappa"] * d["sqrt_eta_T"]
    if not _close(d["prior_std"], prior_std):
        raise ManifestError(f"{where}: diffusion.prior_std {d['prior_std']} != kappa*sqrt_eta_T = {prior_std:.6g}; "
                            "re-export the bundle")
    input_scale = 1.0 / math.sqrt(d["kappa"] ** 2 * d["sqrt_eta_T"] ** 2 + 1.0)
    if not _close(d["input_scale"], input_scale):
        raise ManifestError(f"{where}: diffusion.input_scale {d['input_scale']} != 1/sqrt(kappa^2 eta_T + 1) = "
                            f"{input_scale:.6g}; re-export the bundle")


def _io_signature(spec: ExportSpec) -> Tuple[Tuple[Tuple[str, int, int], ...], ...]:
    """(role, channels, scale) of the inputs and of the outputs: the contract. Names are the
    graph's own business (runtimes read them from the manifest), so they are not compared."""
    return (tuple(sorted((t.role, t.channels, t.scale) for t in spec.inputs)),
            tuple(sorted((t.role, t.channels, t.scale) for t in spec.outputs)))


def _check_graphs(manifest: Dict[str, Any], where: str) -> None:
    multiple = manifest["preprocess"]["latent_multiple"]
    noise_channels = manifest["model"]["noise_channels"]
    expected = graph_specs(multiple, noise_channels)
    for name, graph in manifest["graphs"].items():
        spec = ExportSpec.from_dict(graph["spec"])
        if spec.name != name:
            raise ManifestError(f"{where}: graphs.{name}.spec.name is {spec.name!r}; re-export the bundle")
        if multiple % spec.multiple:
            raise ManifestError(f"{where}: preprocess.latent_multiple {multiple} is not a multiple of "
                                f"graphs.{name}.spec.multiple {spec.multiple}; re-export the bundle")
        got, want = _io_signature(spec), _io_signature(expected[name])
        if got != want:
            raise ManifestError(f"{where}: graphs.{name} I/O (role, channels, scale) {got} does not match "
                                f"this toolkit's spec {want} for noise_channels={noise_channels}; re-export the bundle")
        names = [t.name for t in spec.inputs + spec.outputs]
        if len(set(names)) != len(names):
            raise ManifestError(f"{where}: graphs.{name} names two tensors alike ({names}); re-export the bundle")
        for shape in spec.profile:
            if shape[1] % spec.multiple or shape[2] % spec.multiple:
                raise ManifestError(f"{where}: graphs.{name}.spec.profile shape {list(shape)} is not a multiple of "
                                    f"{spec.multiple}; re-export the bundle")
    tiling = manifest["tiling"]
    if tiling["overlap"] >= tiling["tile"]:
        raise ManifestError(f"{where}: tiling.overlap {tiling['overlap']} must be smaller than tiling.tile "
                            f"{tiling['tile']}; fix the manifest or re-export with a valid --tile/--overlap")


def iter_files(manifest: Dict[str, Any], precision: Optional[str] = None) -> Iterator[Tuple[str, str, Optional[str]]]:
    """(where in the manifest, relative file, sha256 or None) for every graph, external-data and
    engine file (of one precision when given)."""
    for name, graph in manifest["graphs"].items():
        for prec, variant in graph["variants"].items():
            if precision in (None, prec):
                yield f"graphs.{name}.variants.{prec}", variant["file"], variant["sha256"]
                for extra in variant.get("external_data", []) or []:
                    yield f"graphs.{name}.variants.{prec}.external_data", extra, None
    for name, by_precision in (manifest.get("engines") or {}).items():
        for prec, engine in by_precision.items():
            if precision in (None, prec):
                yield f"engines.{name}.{prec}", engine["file"], engine["sha256"]


def check_bundle_files(bundle_dir: PathLike, manifest: Dict[str, Any], *, verify_sha256: bool = False,
                precision: Optional[str] = None) -> None:
    """Every file the manifest names (of ``precision`` when given) exists, and with
    ``verify_sha256`` matches its hash (slow for full-size graphs)."""
    root = Path(bundle_dir)
    for where, rel, sha in iter_files(manifest, precision):
        path = root / rel
        if not path.is_file():
            raise ManifestError(f"{root}: {where} names {rel!r}, which is missing; copy the whole bundle folder "
                                "or re-export it")
        if verify_sha256 and sha is not None and sha256_file(path) != sha:
            raise ManifestError(f"{root}: {where} file {rel!r} does not match its sha256 in the manifest; "
                                "the file was changed or truncated: re-export the bundle")


def validate_manifest(manifest: Dict[str, Any], where: str = "manifest") -> None:
    """Validate a manifest dict (schema + cross-field checks); raises :class:`ManifestError`."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: manifest must be a JSON object; re-export the bundle with rsd-export")
    _check_version(manifest, where)
    _check_schema(manifest, where)
    _check_diffusion(manifest["diffusion"], where)
    _check_graphs(manifest, where)


def load_manifest(bundle_dir: PathLike, *, check_files: bool = True, verify_sha256: bool = False) -> Dict[str, Any]:
    """Read and validate ``<bundle_dir>/manifest.json`` (``bundle_dir`` may be the file itself).

    ``check_files``: every graph/engine file the manifest names must exist; ``verify_sha256``:
    hash them too. Returns the validated dict (unknown keys of newer 2.x writers are kept)."""
    path = Path(bundle_dir)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest found; pass the folder written by rsd-export "
                            "(it holds manifest.json)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: manifest is not readable JSON ({str(e).splitlines()[0]}); "
                            "re-export the bundle with rsd-export") from e
    validate_manifest(manifest, where=str(path))
    if check_files:
        check_bundle_files(path.parent, manifest, verify_sha256=verify_sha256)
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder with helpers to find its files and specs."""

    root: Path
    manifest: Dict[str, Any]

    @classmethod
    def open(cls, bundle_dir: PathLike, *, check_files: bool = True, verify_sha256: bool = False) -> "Bundle":
        root = Path(bundle_dir)
        manifest = load_manifest(root, check_files=check_files, verify_sha256=verify_sha256)
        return cls(root=root if root.is_dir() else root.parent, manifest=manifest)

    @property
    def kind(self) -> str:
        return str(self.manifest["model"]["kind"])

    @property
    def noise_channels(self) -> int:
        return int(self.manifest["model"]["noise_channels"])

    @property
    def latent_multiple(self) -> int:
        return int(self.manifest["preprocess"]["latent_multiple"])

    @property
    def timestep(self) -> int:
        return int(self.manifest["diffusion"]["timestep"])

    def spec(self, submodel: str) -> ExportSpec:
        return ExportSpec.from_dict(self.manifest["graphs"][submodel]["spec"])

    def specs(self) -> Dict[str, ExportSpec]:
        return {g: self.spec(g) for g in SUBMODELS}

    def precisions(self, submodel: str) -> Tuple[str, ...]:
        return tuple(self.manifest["graphs"][submodel]["variants"])

    def graph_file(self, submodel: str, precision: str = "fp32") -> Path:
        variants = self.manifest["graphs"][submodel]["variants"]
        if precision not in variants:
            raise ManifestError(f"{self.root}: no {precision} graph for {submodel} (has {sorted(variants)}); "
                                f"re-export with that precision or choose one of {sorted(variants)}")
        return self.root / variants[precision]["file"]

    def engine_file(self, submodel: str, precision: str = "fp32") -> Optional[Path]:
        engine = (self.manifest.get("engines") or {}).get(submodel, {}).get(precision)
        return None if engine is None else self.root / engine["file"]
