"""Samplers: ResShift's multi-step ancestral sampler and the one-step SinSR/RSD sampler.

Randomness is explicit: pass a ``torch.Generator`` or the list of noise tensors in the official draw order
(prior first, then one per step for ResShift -- the draw at step 0 happens and is discarded, as upstream --
or, for an RSD student in one step, the student's noise map after the prior).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import torch
from torch import nn

from rsd_deploy.models.schedule import Schedule

Denoiser = Union[nn.Module, Callable[..., torch.Tensor]]


class _NoiseSource:
    """Yields the noises in order, from a list or drawn with a generator (N(0, I), float32)."""

    def __init__(self, noises: Optional[Sequence[torch.Tensor]], generator: Optional[torch.Generator]):
        self._noises = list(noises) if noises is not None else None
        self._generator = generator
        self._i = 0

    def next(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        if self._noises is not None:
            if self._i >= len(self._noises):
                raise ValueError(f"noises: {len(self._noises)} tensors given, more are needed")
            n = self._noises[self._i]
            if tuple(n.shape) != tuple(shape):
                raise ValueError(f"noise {self._i} has shape {tuple(n.shape)}, expected {tuple(shape)}")
            out = n.to(device=like.device, dtype=like.dtype)
        else:
            device = self._generator.device if self._generator is not None else like.device
            out = torch.randn(tuple(shape), generator=self._generator, device=device,
                              dtype=torch.float32).to(device=like.device, dtype=like.dtype)
        self._i += 1
        return out

    def check_consumed(self) -> None:
        if self._noises is not None and self._i != len(self._noises):
            raise ValueError(f"noises: {len(self._noises)} tensors given, {self._i} used")


def _noise_channels(unet: Denoiser) -> int:
    config = getattr(unet, "config", None)
    return int(getattr(config, "noise_channels", 0))


def _step(unet: Denoiser, schedule: Schedule, z: torch.Tensor, i: int, lq: torch.Tensor,
          noise_map: Optional[torch.Tensor]) -> torch.Tensor:
    t = torch.full((z.shape[0],), i, dtype=torch.int64, device=z.device)
    return unet(z / float(schedule.in_std[i]), t, lq, noise_map)


def prior_sample(schedule: Schedule, z_y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z_T = z_y + kappa sqrt(eta_{T-1}) eps."""
    return z_y + schedule.kappa * float(schedule.sqrt_eta[-1]) * eps


@torch.no_grad()
def sample_resshift(unet: Denoiser, schedule: Schedule, z_y: torch.Tensor, lq: torch.Tensor,
                    generator: Optional[torch.Generator] = None,
                    noises: Optional[Sequence[torch.Tensor]] = None,
                    trajectory: Optional[List[dict]] = None) -> torch.Tensor:
    """ResShift ancestral sampling, T UNet calls; returns the final latent (= the last x0 prediction).

    z_y (B, 3, h, w) encoder latent of the bicubic-x4 LR image; lq (B, 3, h, w) LR image in [-1, 1].
    ``noises``: T + 1 tensors shaped like z_y (prior, then steps T-1 .. 0). ``trajectory``: if a list is given,
    one dict per step (t, unet_input, x0, sample) is appended, for step-by-step parity checks.
    """
    if _noise_channels(unet):
        raise ValueError("sample_resshift runs a ResShift teacher; an RSD student (noise_channels > 0) samples "
                         "in one step with sample_onestep")
    source = _NoiseSource(noises, generator)
    z = prior_sample(schedule, z_y, source.next(z_y.shape, z_y))
    for i in reversed(range(schedule.steps)):
        x0 = _step(unet, schedule, z, i, lq, None)
        mean = float(schedule.c1[i]) * z + float(schedule.c2[i]) * x0
        eps = source.next(z.shape, z)  # drawn at i = 0 too (and discarded) to keep upstream's RNG stream
        z = mean + float(schedule.sigma[i]) * eps if i > 0 else mean
        if trajectory is not None:
            trajectory.append({"t": i, "x0": x0, "sample": z})
    source.check_consumed()
    return z


@torch.no_grad()
def sample_onestep(unet: Denoiser, schedule: Schedule, z_y: torch.Tensor, lq: torch.Tensor,
                   generator: Optional[torch.Generator] = None,
                   noises: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """SinSR / RSD: x0 = f(z_T / in_std[T-1], T-1, lq[, noise map]) with z_T = z_y + kappa sqrt(eta_T) eps.

    ``noises``: [prior] for SinSR, [prior, noise map (B, noise_channels, h, w)] for an RSD student.
    """
    source = _NoiseSource(noises, generator)
    z = prior_sample(schedule, z_y, source.next(z_y.shape, z_y))
    nc = _noise_channels(unet)
    noise_map = source.next((z.shape[0], nc, *z.shape[2:]), z) if nc else None
    source.check_consumed()
    return _step(unet, schedule, z, schedule.steps - 1, lq, noise_map)
