"""Helpers for the pipeline tests: a cheap, purely local stand-in backend, schedules, test images."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from rsd_deploy.backends.base import Backend


class LocalStandInBackend(Backend):
    """Networks replaced by local maps, so a tiled run must equal an untiled one away from edges.

    encode: 4x4 average pool; denoise: lq + 0.05 * z_t (+ noise map); decode: bilinear x4.
    """

    name = "stand-in"

    def __init__(self, noise_channels: int = 0):
        self.noise_channels = noise_channels
        self.calls = {"encode": 0, "denoise": 0, "decode": 0}
        self.steps_seen: list = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        self.calls["encode"] += 1
        return F.avg_pool2d(image, 4)

    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.calls["denoise"] += 1
        self.steps_seen.append(step)
        out = lq + 0.05 * z_t
        if noise is not None:
            out = out + 0.05 * noise.mean(dim=1, keepdim=True)
        return out

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.calls["decode"] += 1
        return F.interpolate(z, scale_factor=4, mode="bilinear", align_corners=False)


def schedule(preset: str = "v1"):
    from rsd_deploy.models import Schedule

    return Schedule.preset(preset)


def random_rgb(h: int, w: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    # smooth-ish content (blurred noise) so bicubic borders stay small
    base = rng.integers(0, hi + 1, size=(h // 4 + 2, w // 4 + 2, 3)).astype(np.float32)
    import cv2

    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img, 0, hi).astype(dtype)


class TileStatsStandInBackend(LocalStandInBackend):
    """Like LocalStandInBackend, but the decoder adds a per-tile offset (0.5 x the tile's mean),
    the way GroupNorm statistics make a real network's output depend on the tile it sees. Tiled
    runs then disagree with untiled ones by a bounded offset, and unblended tiles show seams."""

    name = "tile-stats-stand-in"

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.calls["decode"] += 1
        return super().decode(z) + 0.5 * z.mean(dim=(1, 2, 3), keepdim=True)


def seam_ratio(image: np.ndarray, borders_y, borders_x, near: int = 6) -> float:
    """Gradient energy across tile borders against the nearby interior, worst border.

    For each border c (rows/columns c-1 and c come from different tiles' edges) the mean |step|
    between them over the whole line, divided by the mean |step| between neighbouring lines 2..near
    px away on both sides. About 1 for a seamless image; large where tile edges show.
    """
    worst = 0.0
    for axis, borders in ((0, borders_y), (1, borders_x)):
        g = np.abs(np.diff(image, axis=axis)).mean(axis=(1 - axis, 2))  # g[c-1]: between lines c-1 and c
        for c in borders:
            ref = np.concatenate([g[max(c - 1 - near, 0):max(c - 2, 0)], g[c + 1:c + near]])
            worst = max(worst, float(g[c - 1] / ref.mean()))
    return worst


def tile_borders(plan, scale: int = 4):
    """SR coordinates of every interior tile edge (starts and ends) of a TilePlan."""
    ys = sorted({c for y in plan.ys for c in (y * scale, (y + plan.tile_h) * scale) if 0 < c < plan.height * scale})
    xs = sorted({c for x in plan.xs for c in (x * scale, (x + plan.tile_w) * scale) if 0 < c < plan.width * scale})
    return ys, xs
