"""``manifest.json`` beside the exported graphs (schema_version 1.0).

The manifest is what a C++ app, the Triton generator and the ONNX Runtime / TensorRT backends read:
files with sha256, I/O specs and profiles, precision recipes, the diffusion constants folded into
the denoiser, pre/post-processing and tiling defaults, the source checkpoints and library versions.
The JSON schema lives in ``rsd_deploy/export/schema/manifest.schema.json``.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Dict, List, Optional

from rsd_deploy.errors import ManifestError
from rsd_deploy.fileio import atomic_write_text, sha256_file

SCHEMA_VERSION = "1.0"
MANIFEST_NAME = "manifest.json"
ACCURACY_JSON = "accuracy.json"
ACCURACY_MD = "accuracy.md"


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


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def read_manifest(export_dir: Path) -> dict:
    """Load and sanity-check ``export_dir/manifest.json`` (ManifestError with what to do)."""
    path = Path(export_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{export_dir} has no {MANIFEST_NAME}; export the graphs with `rsd-export -o {export_dir}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run rsd-export") from exc
    version = str(data.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ManifestError(f"{path} has schema_version {version!r}; this rsd-deploy reads {SCHEMA_VERSION}: "
                            f"re-export with this version")
    for key in ("model", "diffusion", "graphs", "preprocess"):
        if key not in data:
            raise ManifestError(f"{path} lacks the {key!r} section; re-run rsd-export")
    return data


def verify_files(export_dir: Path, manifest: dict, precision: Optional[str] = None) -> None:
    """Check that graph files exist and match their sha256 (ManifestError otherwise)."""
    for name, graph in manifest["graphs"].items():
        for prec, var in graph["variants"].items():
            if precision is not None and prec != precision:
                continue
            path = Path(export_dir) / var["file"]
            if not path.is_file():
                raise ManifestError(f"{path} listed in the manifest is missing; re-run rsd-export")
            if sha256_file(path) != var["sha256"]:
                raise ManifestError(f"{path} does not match its sha256 in the manifest (modified or partial); "
                                    f"re-run rsd-export")
