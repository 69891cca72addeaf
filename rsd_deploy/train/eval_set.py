"""Evaluation like the papers': a model on a whole LR folder (any number of images, full size, tiled),
PSNR/SSIM on Y (``rsd_deploy.metrics``), LPIPS-Alex, and CLIPIQA/MUSIQ when their weights are local.

Every image goes through the SR pipeline (``SRPipeline``, the same tiling, padding, noise and 8-bit
rounding as ``rsd-upscale``), so full-size RealSR images, whose VQ attention would not fit whole,
are evaluated tile by tile as the official ``--chop_size 512`` inference does. Images are processed
one at a time; a failing image is recorded in the report and the others go on.

The report is ``report.json`` (settings, per-image rows, means) and ``report.md`` (the same as a
Markdown table, with the command that made it), both written atomically.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rsd_deploy import metrics
from rsd_deploy.errors import ConfigError, RSDError
from rsd_deploy.fileio import atomic_write_text
from rsd_deploy.pipeline.loading import ModelSource
from rsd_deploy.types import TileConfig

logger = logging.getLogger(__name__)

NO_REFERENCE = ("clipiqa", "musiq")


@dataclass(frozen=True)
class EvalConfig:
    lr_dir: Path
    output_dir: Path
    hr_dir: Optional[Path] = None  # None: no-reference metrics only
    source: ModelSource = ModelSource()
    tiling: TileConfig = TileConfig(tile=128, overlap=16)  # 512 px HR chops, as the official inference
    seed: int = 0
    limit: Optional[int] = None  # None: every image
    lpips_weights: Optional[Path] = None  # LPIPS-Alex file (train/scripts/make_lpips_weights.py)
    pyiqa_weights: Optional[Path] = None  # folder with pyiqa's CLIPIQA / MUSIQ weight files
    save_images: bool = False
    command: str = ""  # the command line, written into the Markdown report


@dataclass
class EvalReport:
    rows: List[Dict[str, Any]] = field(default_factory=list)
    failures: List[Dict[str, str]] = field(default_factory=list)
    means: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_dict(self) -> Dict[str, Any]:
        return {"settings": self.settings, "means": self.means, "images": self.rows, "failures": self.failures,
                "notes": self.notes}


def pair_files(lr_dir: Path, hr_dir: Optional[Path]) -> List[Tuple[Path, Optional[Path]]]:
    """LR images with their HR partner (same file name, else same stem with any image extension)."""
    from rsd_deploy.pipeline.image_io import image_files

    if not lr_dir.is_dir():
        raise ConfigError(f"LR folder {lr_dir} does not exist; pass the folder of low-resolution images")
    lr_files = image_files(lr_dir)
    if not lr_files:
        raise ConfigError(f"no images in {lr_dir}; pass a folder of png/jpg/webp/tif/bmp files")
    if hr_dir is None:
        return [(p, None) for p in lr_files]
    if not hr_dir.is_dir():
        raise ConfigError(f"HR folder {hr_dir} does not exist; pass --hr DIR or omit it for no-reference metrics")
    by_stem = {p.stem: p for p in image_files(hr_dir)}
    pairs = []
    missing = []
    for p in lr_files:
        hr = hr_dir / p.name if (hr_dir / p.name).is_file() else by_stem.get(p.stem)
        if hr is None:
            missing.append(p.name)
        pairs.append((p, hr))
    if missing:
        raise ConfigError(f"{len(missing)} LR images have no HR partner in {hr_dir} (e.g. {missing[0]}); "
                          "HR files need the LR file's name or stem")
    return pairs


def _rgb8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint16:
        return np.round(rgb.astype(np.float64) / 257.0).astype(np.uint8)
    return rgb


def _lpips_metric(path: Optional[Path], device: str) -> Tuple[Optional[Callable], str]:
    if path is None:
        return None, "LPIPS-Alex not computed: no --lpips-weights (a local file; nothing is downloaded)"
    import torch

    from rsd_deploy.train.lpips import load_lpips

    model = load_lpips(str(path), required=True, net="alex").to(device)  # type: ignore[union-attr]

    def score(sr: np.ndarray, hr: np.ndarray) -> float:
        to = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].to(device, torch.float32) / 127.5 - 1  # noqa: E731
        with torch.no_grad():
            return float(model(to(sr), to(hr))[0])

    return score, ""


def _pyiqa_metric(name: str, folder: Optional[Path], device: str) -> Tuple[Optional[Callable], str]:
    """A pyiqa no-reference metric built from local weights only, or (None, why not)."""
    if folder is None:
        return None, f"{name.upper()} not computed: no --pyiqa-weights folder (local weights only)"
    try:
        import pyiqa  # type: ignore[import-not-found]
    except ImportError:
        return None, f"{name.upper()} not computed: pyiqa is not installed"
    weights = sorted(Path(folder).glob(f"*{name}*"))
    if not weights:
        return None, f"{name.upper()} not computed: no {name} weights file in {folder}"
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        model = pyiqa.create_metric(name, device=device, pretrained_model_path=str(weights[0]))
    except Exception as exc:  # noqa: BLE001 - any failure to build offline means "not computed", said why
        return None, f"{name.upper()} not computed: pyiqa could not build it offline ({type(exc).__name__})"
    import torch

    def score(sr: np.ndarray, hr: Optional[np.ndarray] = None) -> float:
        x = torch.from_numpy(sr).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0
        with torch.no_grad():
            return float(model(x))

    return score, ""


def evaluate_set(config: EvalConfig, on_image: Optional[Callable[[Dict[str, Any]], None]] = None) -> EvalReport:
    """Super-resolve every LR image of ``config.lr_dir`` and score it; write report.json and report.md."""
    from rsd_deploy.pipeline.image_io import read_image, write_image_atomic
    from rsd_deploy.pipeline.loading import default_device, resolve_backend
    from rsd_deploy.pipeline.sr_pipeline import SRPipeline

    pairs = pair_files(config.lr_dir, config.hr_dir)
    if config.limit is not None:
        pairs = pairs[:config.limit]
    from rsd_deploy.train.rundir import check_writable

    check_writable(config.output_dir, what="output folder")
    backend, info = resolve_backend(config.source)
    pipeline = SRPipeline(backend, info, config.tiling, seed=config.seed)
    device = config.source.device or default_device()
    report = EvalReport()
    lpips, why = _lpips_metric(config.lpips_weights, device) if config.hr_dir is not None else (None, "")
    if why:
        report.notes.append(why)
    nr: Dict[str, Callable] = {}
    for name in NO_REFERENCE:
        fn, why = _pyiqa_metric(name, config.pyiqa_weights, device)
        if fn is not None:
            nr[name] = fn
        else:
            report.notes.append(why)
    report.notes.append(metrics.METRIC_NOTE)
    report.settings = {"model": info.label or info.kind.value, "kind": info.kind.value, "lr_dir": str(config.lr_dir),
                       "hr_dir": str(config.hr_dir) if config.hr_dir else None, "images": len(pairs),
                       "tile": pipeline.tiling.tile, "overlap": pipeline.tiling.overlap, "seed": config.seed,
                       "device": device, "precision": config.source.precision}
    for lr_path, hr_path in pairs:
        start = time.perf_counter()
        try:
            lr = read_image(lr_path)
            sr = metrics.to_uint8(pipeline.upscale_array(lr.rgb))
            row: Dict[str, Any] = {"image": lr_path.name, "lr_size": f"{lr.width}x{lr.height}",
                                   "seconds": round(time.perf_counter() - start, 3)}
            if hr_path is not None:
                hr = _rgb8(read_image(hr_path).rgb)
                if hr.shape != sr.shape:
                    raise RSDError(f"HR {hr_path.name} is {hr.shape[1]}x{hr.shape[0]}, the x4 output "
                                   f"{sr.shape[1]}x{sr.shape[0]}; pair images whose HR is exactly 4x the LR")
                row.update(metrics.sr_metrics(sr, hr))
                if lpips is not None:
                    row["lpips_alex"] = lpips(sr, hr)
            for name, fn in nr.items():
                row[name] = fn(sr)
            if config.save_images:
                (config.output_dir / "images").mkdir(exist_ok=True)
                write_image_atomic(config.output_dir / "images" / f"{lr_path.stem}_x4.png",
                                   np.ascontiguousarray(sr[..., ::-1]))  # OpenCV's BGR order
        except RSDError as exc:
            report.failures.append({"image": lr_path.name, "error": str(exc)})
            logger.error("%s: %s", lr_path.name, exc)
            continue
        report.rows.append(row)
        if on_image is not None:
            on_image(row)
        logger.info("%s: %s", lr_path.name, ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                        if isinstance(v, float)))
    keys = [k for k in (report.rows[0] if report.rows else {}) if isinstance(report.rows[0][k], (int, float))]
    report.means = {k: float(np.mean([r[k] for r in report.rows])) for k in keys}
    write_report(report, config)
    return report


_COLUMNS = (("psnr_y", "PSNR-Y (dB)", 2), ("ssim_y", "SSIM-Y", 4), ("lpips_alex", "LPIPS-Alex", 4),
            ("clipiqa", "CLIPIQA", 4), ("musiq", "MUSIQ", 2), ("psnr_rgb", "PSNR-RGB (dB)", 2),
            ("ssim_rgb", "SSIM-RGB", 4), ("seconds", "s/image", 2))


def markdown(report: EvalReport, command: str = "") -> str:
    cols = [c for c in _COLUMNS if c[0] in report.means]
    s = report.settings
    lines = [f"# Evaluation: {s.get('model')} on {s.get('lr_dir')}", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [f"{s.get('images')} images, tiles of {s.get('tile')} LR px (overlap {s.get('overlap')}), seed "
              f"{s.get('seed')}, {s.get('device')} {s.get('precision')}.", ""]
    lines += ["| image | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    fmt = lambda v, d: "inf" if v == float("inf") else f"{v:.{d}f}"  # noqa: E731
    lines.append("| **mean** | " + " | ".join(f"**{fmt(report.means[c[0]], c[2])}**" for c in cols) + " |")
    for row in report.rows:
        lines.append(f"| {row['image']} | " + " | ".join(fmt(row[c[0]], c[2]) for c in cols) + " |")
    if report.failures:
        lines += ["", "Failed:", *[f"* {f['image']}: {f['error']}" for f in report.failures]]
    lines += ["", *[f"* {n}" for n in report.notes], ""]
    return "\n".join(lines)


def json_finite(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("inf"): JSON has no inf, and identical images give PSNR inf."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_finite(v) for v in value]
    return value


def write_report(report: EvalReport, config: EvalConfig) -> None:
    atomic_write_text(config.output_dir / "report.json", json.dumps(json_finite(report.to_dict()), indent=1) + "\n")
    atomic_write_text(config.output_dir / "report.md", markdown(report, config.command))


__all__: Sequence[str] = ("EvalConfig", "EvalReport", "evaluate_set", "pair_files", "markdown")
