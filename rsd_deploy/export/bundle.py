"""Load and validate the manifest of an engine bundle (the output folder of ``rsd-export``).

The manifest format is described by ``rsd_deploy/export/schema/manifest.schema.json`` (JSON
Schema draft 2020-12, versioned by ``schema_version`` MAJOR.MINOR). Validation has two layers:

1. the JSON Schema (types, required keys, enums), through ``jsonschema`` when it is installed;
2. cross-field checks a schema cannot express, tied to the toolkit's single sources of truth:
   diffusion constants agree with each other, graph I/O matches :mod:`rsd_deploy.export.specs`,
   referenced files exist (and, on request, match their sha256).

Every failure raises :class:`rsd_deploy.errors.ManifestError` with a one-line message.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from rsd_deploy.errors import ManifestError
from rsd_deploy.fileio import sha256_file
from rsd_deploy.export.specs import ExportSpec, ShapeProfile, TensorSpec, decoder_spec, denoiser_spec, encoder_spec

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = "1.0"
SUPPORTED_MAJOR = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "manifest.schema.json"
SUBMODEL_NAMES = ("encoder", "denoiser", "decoder")
# relative tolerance for derived constants written as JSON floats (rounding in the writer)
_CONSTANT_RTOL = 1e-4

PathLike = Union[str, Path]


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
                            f"(reads {SUPPORTED_MAJOR}.x); use the rsd-deploy release that wrote it or re-export")


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


def spec_from_dict(d: Dict[str, Any]) -> ExportSpec:
    """Rebuild an :class:`ExportSpec` from its ``to_dict()`` form (the manifest's ``graphs.*.spec``)."""

    def tensors(items: List[Dict[str, Any]]) -> Tuple[TensorSpec, ...]:
        return tuple(TensorSpec(name=t["name"], channels=t["channels"], scale=t.get("scale", 1),
                                dtype=t.get("dtype", "float32"), description=t.get("description", ""))
                     for t in items)

    p = d["profile"]
    return ExportSpec(
        name=d["name"], inputs=tensors(d["inputs"]), outputs=tensors(d["outputs"]), multiple=d["multiple"],
        profile=ShapeProfile(min=tuple(p["min"]), opt=tuple(p["opt"]), max=tuple(p["max"])),  # type: ignore[arg-type]
        atol_fp32=d["atol_fp32"], notes=tuple(d.get("notes", ())),
    )


def _io_signature(spec: ExportSpec) -> Tuple[Tuple[Tuple[str, int, int], ...], Tuple[Tuple[str, int, int], ...]]:
    return (tuple((t.name, t.channels, t.scale) for t in spec.inputs),
            tuple((t.name, t.channels, t.scale) for t in spec.outputs))


def _check_graphs(manifest: Dict[str, Any], where: str) -> None:
    multiple = manifest["preprocess"]["latent_multiple"]
    noise_channels = manifest["model"]["noise_channels"]
    expected = {
        "encoder": encoder_spec(multiple),
        "denoiser": denoiser_spec(multiple, noise_channels),
        "decoder": decoder_spec(multiple),
    }
    for name, graph in manifest["graphs"].items():
        spec = spec_from_dict(graph["spec"])
        if spec.name != name:
            raise ManifestError(f"{where}: graphs.{name}.spec.name is {spec.name!r}; re-export the bundle")
        if multiple % spec.multiple:
            raise ManifestError(f"{where}: preprocess.latent_multiple {multiple} is not a multiple of "
                                f"graphs.{name}.spec.multiple {spec.multiple}; re-export the bundle")
        got, want = _io_signature(spec), _io_signature(expected[name])
        if got != want:
            raise ManifestError(f"{where}: graphs.{name} I/O (name, channels, scale) {got} does not match this "
                                f"toolkit's spec {want} for noise_channels={noise_channels}; re-export the bundle")
        for shape in spec.profile:
            if shape[1] % spec.multiple or shape[2] % spec.multiple:
                raise ManifestError(f"{where}: graphs.{name}.spec.profile shape {list(shape)} is not a multiple of "
                                    f"{spec.multiple}; re-export the bundle")
    tiling = manifest["tiling"]
    if tiling["overlap"] >= tiling["tile"]:
        raise ManifestError(f"{where}: tiling.overlap {tiling['overlap']} must be smaller than tiling.tile "
                            f"{tiling['tile']}; fix the manifest or re-export with a valid --tile/--overlap")


def iter_files(manifest: Dict[str, Any]) -> Iterator[Tuple[str, str, Optional[str]]]:
    """(where in the manifest, relative file, sha256 or None) for every graph, external-data and engine file."""
    for name, graph in manifest["graphs"].items():
        for precision, variant in graph["variants"].items():
            yield f"graphs.{name}.variants.{precision}", variant["file"], variant["sha256"]
            for extra in variant.get("external_data", []) or []:
                yield f"graphs.{name}.variants.{precision}.external_data", extra, None
    for name, by_precision in (manifest.get("engines") or {}).items():
        for precision, engine in by_precision.items():
            yield f"engines.{name}.{precision}", engine["file"], engine["sha256"]


def _check_files(manifest: Dict[str, Any], root: Path, verify_sha256: bool) -> None:
    for where, rel, sha in iter_files(manifest):
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
    """Read and validate ``<bundle_dir>/manifest.json``.

    Args:
        bundle_dir: the export folder (or the manifest file itself).
        check_files: also require every graph/engine file the manifest names to exist.
        verify_sha256: also hash those files against the manifest (slow for full-size graphs).

    Returns:
        the manifest as a dict (validated; unknown keys of newer 1.x writers are kept).
    """
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
        _check_files(manifest, path.parent, verify_sha256)
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder with helpers to find its files."""

    root: Path
    manifest: Dict[str, Any]

    @classmethod
    def open(cls, bundle_dir: PathLike, *, verify_sha256: bool = False) -> "Bundle":
        root = Path(bundle_dir)
        manifest = load_manifest(root, verify_sha256=verify_sha256)
        return cls(root=root if root.is_dir() else root.parent, manifest=manifest)

    @property
    def noise_channels(self) -> int:
        return int(self.manifest["model"]["noise_channels"])

    @property
    def latent_multiple(self) -> int:
        return int(self.manifest["preprocess"]["latent_multiple"])

    def spec(self, submodel: str) -> ExportSpec:
        return spec_from_dict(self.manifest["graphs"][submodel]["spec"])

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
