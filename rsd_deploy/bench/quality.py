"""Quality side of the benchmark: PSNR/SSIM against HR and each backend's difference from PyTorch fp32.

Metrics on 8-bit images, no border crop:
* PSNR/SSIM on the **Y channel** (ITU-R BT.601 luma of 8-bit RGB, 16..235, as BasicSR and pyiqa's
  ``test_y_channel``) and on **RGB** (all three channels); SSIM is Wang et al.'s Gaussian-window
  SSIM (11x11, sigma 1.5, population covariance): all from ``rsd_deploy.metrics``.
* The LR goes through rsd-upscale's image path (``image_io.pad_to_multiple``, ``bicubic_x4``).
* Backend difference: max and mean absolute difference of the SR output in [-1, 1] (before
  rounding) from the PyTorch fp32 output of the same model and the same noises, and the PSNR of
  the 8-bit result against the 8-bit reference.
* LPIPS / CLIPIQA / MUSIQ run only when their packages and weights are on disk (no downloads).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

from rsd_deploy import metrics
from rsd_deploy.errors import ImageIOError, RSDError
from rsd_deploy.metrics import METRIC_NOTE
from rsd_deploy.pipeline.image_io import (SUPPORTED_EXTENSIONS, image_files, pad_to_multiple, read_image,
                                          to_model_range)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- images

def list_images(folder: Path) -> List[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageIOError(f"{folder}: not a folder of images; pass a folder with PNG/JPEG files")
    files = image_files(folder)
    if not files:
        raise ImageIOError(f"{folder}: no images ({', '.join(SUPPORTED_EXTENSIONS)}) found")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """8-bit RGB (H, W, 3) uint8 as rsd-upscale reads it (image_io.read_image: EXIF orientation applied,
    grey stacked to 3 channels, alpha dropped)."""
    image = read_image(path)
    if image.dtype != np.uint8:
        raise ImageIOError(f"{path}: {image.dtype} image; the quality side compares 8-bit images: convert it")
    return image.rgb


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1] (image_io.to_model_range, as rsd-upscale)."""
    return torch.from_numpy(to_model_range(rgb)).permute(2, 0, 1)[None].contiguous()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (H, W, 3) uint8, rounded as rsd-upscale writes (rsd_deploy.metrics)."""
    return np.ascontiguousarray(metrics.to_uint8(img[0]).transpose(1, 2, 0))


# ---------------------------------------------------------------- metrics (rsd_deploy.metrics)

def image_metrics(sr: np.ndarray, hr: np.ndarray) -> Dict[str, float]:
    """PSNR/SSIM on Y and RGB of two (H, W, 3) uint8 images."""
    if sr.shape != hr.shape:
        raise ImageIOError(f"SR {sr.shape} and HR {hr.shape} differ in size; HR must be exactly 4x the LR")
    return metrics.sr_metrics(sr, hr)


def difference(out: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    """max/mean abs difference in [-1, 1] and PSNR of the 8-bit images."""
    d = (out.float().cpu() - ref.float().cpu()).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "psnr": metrics.psnr(to_uint8(out), to_uint8(ref))}


def _mean(rows: List[Dict[str, float]]) -> Dict[str, float]:
    if not rows:
        return {}
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "max_abs"}
    if "max_abs" in rows[0]:
        out["max_abs"] = float(max(r["max_abs"] for r in rows))
    return out


def optional_metrics_status() -> List[str]:
    """Notes on LPIPS / CLIPIQA / MUSIQ: they run only with local weights (never downloaded here)."""
    notes = []
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    try:
        import lpips  # noqa: F401

        have = hub.is_dir() and any(p.name.startswith(("alexnet", "vgg16")) for p in hub.iterdir())
        notes.append("LPIPS: package present" + ("" if have else f", backbone weights not in {hub}: skipped"))
    except ImportError:
        notes.append("LPIPS skipped: the lpips package is not installed (and its weights are not on disk)")
    try:
        import pyiqa  # noqa: F401

        notes.append("CLIPIQA/MUSIQ: pyiqa present but not run (weights would be downloaded); skipped")
    except ImportError:
        notes.append("CLIPIQA/MUSIQ skipped: pyiqa is not installed and their weights are not on disk")
    return notes


# ---------------------------------------------------------------- the quality run

def run_quality(config, models, variants, contenders, factory: Callable, workdir: Path) -> dict:
    """SR every LR image (first ``config.quality_limit``) with every contender on every variant."""
    from rsd_deploy.bench.contenders import parse_backend_variant, schedule_for, unavailable_reason
    from rsd_deploy.bench.runner import denoise_step_for, draw_noises, super_resolve

    lr_files = list_images(Path(config.quality_lr))[: max(1, config.quality_limit)]
    hr_files: Dict[str, Path] = {}
    if config.quality_hr:
        hr_files = {p.stem: p for p in list_images(Path(config.quality_hr))}
    multiple = models.input_multiple
    lqs = []
    for p in lr_files:
        lq = to_tensor(read_rgb(p))
        lqs.append((p, pad_to_multiple(lq, multiple), tuple(lq.shape[-2:])))

    def run_all(backend, contender, schedule) -> List[torch.Tensor]:
        outs = []
        for k, (p, lq, (h, w)) in enumerate(lqs):
            gen = torch.Generator().manual_seed(config.seed + k)  # same noises on every backend
            with torch.inference_mode():
                noises = draw_noises(contender, schedule, (1, 3, *lq.shape[-2:]), gen, backend.device)
                sr = super_resolve(backend, contender, schedule, lq, noises)
            outs.append(sr[..., : 4 * h, : 4 * w].float().cpu())
        return outs

    tmp = Path(workdir)
    ref_variant = parse_backend_variant("torch-fp32", config.device)
    rows = []
    for contender in contenders:
        schedule = schedule_for(contender)
        ref_backend = factory(ref_variant, contender, models, schedule, config, tmp)
        try:
            refs = run_all(ref_backend, contender, schedule)
        finally:
            ref_backend.close()
        for variant in variants:
            row = {"contender": contender.key, "label": contender.label, "backend": variant.key, "status": "ok"}
            reason = unavailable_reason(variant)
            if reason:
                rows.append({**row, "status": "skipped", "reason": reason})
                continue
            if variant.key == ref_variant.key:
                outs = refs
            else:
                try:
                    backend = factory(variant, contender, models, schedule, config, tmp)
                except (RSDError, ImportError) as e:
                    rows.append({**row, "status": "skipped", "reason": str(e).splitlines()[0]})
                    continue
                try:
                    _, timing_only = denoise_step_for(backend, contender, schedule)
                    if timing_only:
                        rows.append({**row, "status": "skipped",
                                     "reason": "its denoiser graph folds t = T-1: cannot run this sampler"})
                        continue
                    outs = run_all(backend, contender, schedule)
                finally:
                    backend.close()
            row["vs_reference"] = _mean([difference(o, r) for o, r in zip(outs, refs)])
            if models.random_weights:
                row["vs_hr"] = "n/a (random weights)"
            elif hr_files:
                per = []
                for (p, _, _), o in zip(lqs, outs):
                    if p.stem in hr_files:
                        per.append(image_metrics(to_uint8(o), read_rgb(hr_files[p.stem])))
                row["vs_hr"] = _mean(per) if per else None
            rows.append(row)
    return {"lr_dir": str(config.quality_lr), "hr_dir": config.quality_hr, "count": len(lqs),
            "metric_note": METRIC_NOTE, "reference": "torch-fp32 on " + config.device,
            "notes": optional_metrics_status() + [f"LR padded to multiples of {multiple} (rsd-upscale's rule: "
                                                  "reflect per axis, replicate where the pad >= the side), SR cropped"],
            "rows": rows}
