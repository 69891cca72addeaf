"""Shared helpers for the pipeline tests: a cheap, purely local stand-in backend and schedule."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsd_deploy.backends.base import Backend


class LocalStandInBackend(Backend):
    """Networks replaced by local maps, so a tiled run must equal an untiled one away from edges.

    encode: 4x4 average pool; denoise: lq + 0.05 * z_t (+ noise map); decode: nearest x4.
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
        return F.interpolate(z, scale_factor=4, mode="nearest")


def schedule(preset: str = "v1"):
    from rsd_deploy.models import Schedule

    return Schedule.preset(preset)


@pytest.fixture
def stand_in() -> LocalStandInBackend:
    return LocalStandInBackend()


def random_rgb(h: int, w: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    # smooth-ish content (blurred noise) so bicubic borders stay small
    base = rng.integers(0, hi + 1, size=(h // 4 + 2, w // 4 + 2, 3)).astype(np.float32)
    import cv2

    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img, 0, hi).astype(dtype)
