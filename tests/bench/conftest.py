"""Fakes for the bench tests: a deterministic clock, a counting backend, a tiny model set."""
from __future__ import annotations

from types import SimpleNamespace
from typing import List, Optional

import pytest
import torch
from torch import nn

from rsd_deploy.backends.base import Backend
from rsd_deploy.bench.contenders import ModelSet


class FakeClock:
    """Stands in for time.perf_counter: time advances only when ``advance`` is called."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000.0


class CountingBackend(Backend):
    """Arithmetic stand-in for the three networks; counts calls and advances a fake clock per stage."""

    name = "counting"

    def __init__(self, clock: Optional[FakeClock] = None, stage_ms=(3.0, 5.0, 7.0),
                 supported_steps=None, noise_channels: int = 0) -> None:
        self.clock = clock
        self.stage_ms = stage_ms
        self.supported_steps = supported_steps
        self.noise_channels = noise_channels
        self.calls = {"encode": 0, "denoise": 0, "decode": 0}
        self.steps: List[int] = []
        self.noise_shapes: List[Optional[tuple]] = []
        self.closed = False

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _tick(self, i: int) -> None:
        if self.clock is not None:
            self.clock.advance(self.stage_ms[i])

    def encode(self, image):
        self.calls["encode"] += 1
        self._tick(0)
        return torch.nn.functional.avg_pool2d(image, 4)

    def denoise(self, z_t, step, lq, noise=None):
        self.calls["denoise"] += 1
        self.steps.append(step)
        self.noise_shapes.append(None if noise is None else tuple(noise.shape))
        self._tick(1)
        return 0.5 * z_t + 0.1 * lq

    def decode(self, z):
        self.calls["decode"] += 1
        self._tick(2)
        return torch.nn.functional.interpolate(z, scale_factor=4, mode="nearest")

    def close(self) -> None:
        self.closed = True


def fake_models(multiple: int = 16) -> ModelSet:
    """A ModelSet whose modules only carry a config (the counting backend needs no weights)."""
    def module(nc: int) -> nn.Module:
        m = nn.Identity()
        m.config = SimpleNamespace(input_multiple=multiple, noise_channels=nc)  # type: ignore[attr-defined]
        return m

    unets = {"rsd": module(1), "sinsr": module(0), "resshift-v3": module(0), "resshift-v1": module(0)}
    return ModelSet(unets=unets, vq=nn.Identity(), random_weights=True, arch="tiny",
                    sources={k: "fake" for k in unets})


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    clock = FakeClock()
    import rsd_deploy.bench.timer as timer

    monkeypatch.setattr(timer.time, "perf_counter", clock)
    return clock
