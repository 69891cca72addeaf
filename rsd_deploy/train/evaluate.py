"""Full-reference evaluation on paired LR/HR folders: PSNR / SSIM on the Y channel (SR convention) and time.

Images go through the same path as inference: pad the LR to the UNet's input multiple (edge
replication), bicubic x4, encode, sample (one step or the full T-step ResShift sampler), decode, crop,
clamp, round to 8 bits. PSNR/SSIM use BT.601 luma in [16, 235] (MATLAB ``rgb2ycbcr``) with no border
crop; SSIM is the Gaussian-window (11, sigma 1.5) form of Wang et al. 2004.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from rsd_deploy.models.schedule import Schedule


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 255] -> (B, 1, H, W) BT.601 luma in [16, 235], float64."""
    r, g, b = img.double().unbind(1)
    return (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).unsqueeze(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 255] -> (B,) PSNR in dB."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse.clamp(min=1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in [0, 255] -> (B,) SSIM (Gaussian 11x11, sigma 1.5, valid region)."""
    a, b = a.double(), b.double()
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-x ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).view(1, 1, 11, 11).to(a.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, win), F.conv2d(b, win)
    var_a = F.conv2d(a * a, win) - mu_a ** 2
    var_b = F.conv2d(b * b, win) - mu_b ** 2
    cov = F.conv2d(a * b, win) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return m.flatten(1).mean(1)


@torch.no_grad()
def super_resolve(net: nn.Module, vq: nn.Module, schedule: Schedule, lq: torch.Tensor, one_step: bool,
                  generator: torch.Generator, scale: int = 4) -> torch.Tensor:
    """(1, 3, h, w) LR in [-1, 1] -> (1, 3, 4h, 4w) SR in [-1, 1] (clamped)."""
    from rsd_deploy.models.sampler import sample_onestep, sample_resshift

    h, w = lq.shape[-2:]
    m = int(getattr(net, "config").input_multiple)
    padded = F.pad(lq, (0, (-w) % m, 0, (-h) % m), mode="replicate")
    up = F.interpolate(padded, scale_factor=scale, mode="bicubic", align_corners=False)
    z_y = vq.encode(up)  # type: ignore[operator]
    fn = sample_onestep if one_step else sample_resshift
    z = fn(net, schedule, z_y, padded, generator=generator)
    return vq.decode(z)[..., :h * scale, :w * scale].clamp(-1, 1)  # type: ignore[operator]


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
        sr8 = ((sr + 1) * 127.5).round()
        gt8 = ((gt + 1) * 127.5).round()
        ys, yg = rgb_to_y(sr8), rgb_to_y(gt8)
        scores["psnr"].append(float(psnr(ys, yg)[0]))
        scores["ssim"].append(float(ssim(ys, yg)[0]))
        if lpips is not None:
            scores["lpips"].append(float(lpips(sr8 / 127.5 - 1, gt8 / 127.5 - 1)[0]))
    out: Dict[str, float] = {k: sum(v) / len(v) for k, v in scores.items() if v}
    out["seconds_per_image"] = seconds / max(n, 1)
    out["images"] = n
    return out
