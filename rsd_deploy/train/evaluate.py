"""Full-reference evaluation on paired LR/HR folders: PSNR / SSIM on the Y channel (SR convention) and time.

Images go through the same path as inference (rsd_deploy.pipeline.image_io): pad the LR to the UNet's
input multiple (reflect per axis, replicate where the pad is not smaller than the side), bicubic x4,
encode, the one sampler (one step, or the full T-step ResShift sampler), decode, crop, clamp, round to
8 bits as rsd-upscale writes. Metrics are rsd_deploy.metrics: BT.601 luma in [16, 235] with no border
crop; SSIM with the 11x11 Gaussian window (sigma 1.5) of Wang et al. 2004.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from rsd_deploy import metrics
from rsd_deploy.models.sampler import sample_onestep, sample_resshift
from rsd_deploy.models.schedule import Schedule
from rsd_deploy.pipeline.image_io import bicubic_x4, pad_to_multiple


@torch.no_grad()
def super_resolve(net: nn.Module, vq: nn.Module, schedule: Schedule, lq: torch.Tensor, one_step: bool,
                  generator: torch.Generator, scale: int = 4) -> torch.Tensor:
    """(1, 3, h, w) LR in [-1, 1] -> (1, 3, 4h, 4w) SR in [-1, 1] (clamped)."""
    if scale != 4:
        raise ValueError(f"the VQ-f4 models super-resolve x4 only; got scale {scale}")
    h, w = lq.shape[-2:]
    padded = pad_to_multiple(lq, int(getattr(net, "config").input_multiple))
    z_y = vq.encode(bicubic_x4(padded))  # type: ignore[operator]
    fn = sample_onestep if one_step else sample_resshift
    z = fn(net, schedule, z_y, padded, generator=generator)
    return vq.decode(z)[..., :h * scale, :w * scale].clamp(-1, 1)  # type: ignore[operator]


def _rgb8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) model-range tensor -> (H, W, 3) uint8 as written to disk."""
    return metrics.to_uint8(image[0]).transpose(1, 2, 0)


def _unit8_tensor(rgb8: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1] (x / 127.5 - 1): LPIPS sees the written 8-bit image."""
    return torch.from_numpy(rgb8).permute(2, 0, 1)[None].to(device, torch.float32) / 127.5 - 1


@torch.no_grad()
def evaluate_pairs(net: nn.Module, vq: nn.Module, schedule: Schedule, lq_dir: str | Path, gt_dir: str | Path,
                   one_step: bool = True, max_images: Optional[int] = None, seed: int = 12345,
                   device: torch.device = torch.device("cpu"), lpips: Optional[nn.Module] = None) -> Dict[str, float]:
    """Mean PSNR / SSIM (Y), optional LPIPS, and seconds per image over the pairs (same seed per image)."""
    from rsd_deploy.train.data import PairedDataset

    ds = PairedDataset(lq_dir, gt_dir, lq_size=None, hflip=False)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    net, vq = net.to(device).eval(), vq.to(device).eval()
    scores: Dict[str, list] = {"psnr": [], "ssim": [], "lpips": []}
    seconds = 0.0
    for i in range(n):
        item = ds[i]
        lq, gt = item["lq"][None].to(device), item["gt"][None].to(device)
        gen = torch.Generator(device=device).manual_seed(seed + i)
        start = time.perf_counter()
        sr = super_resolve(net, vq, schedule, lq, one_step, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        sr8, gt8 = _rgb8(sr), _rgb8(gt)
        ys, yg = metrics.rgb_to_y(sr8), metrics.rgb_to_y(gt8)
        scores["psnr"].append(metrics.psnr(ys, yg))
        scores["ssim"].append(metrics.ssim(ys, yg))
        if lpips is not None:
            scores["lpips"].append(float(lpips(_unit8_tensor(sr8, device), _unit8_tensor(gt8, device))[0]))
    out: Dict[str, float] = {k: sum(v) / len(v) for k, v in scores.items() if v}
    out["seconds_per_image"] = seconds / max(n, 1)
    out["images"] = n
    return out
