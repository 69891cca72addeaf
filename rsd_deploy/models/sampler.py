"""The one sampler: ResShift's multi-step ancestral sampler and the one-step SinSR/RSD sampler.

:func:`sample` runs either over any ``denoise(z_t, step, lq, noise)`` callable: a runtime backend's
``Backend.denoise`` (the SR pipeline, the benchmark) or a PyTorch UNet wrapped by :func:`unet_denoiser`
(evaluation, training, the goldens). The schedule arithmetic lives in :class:`Schedule` (``prior``,
``step``, ``scale_input``); nothing else repeats it.

Randomness is explicit: a :class:`SamplingNoise`, or for :func:`sample_resshift` / :func:`sample_onestep`
a ``torch.Generator`` or the list of noise tensors in the official draw order (prior first, then one
per step for ResShift -- the draw at step 0 happens and is discarded, as upstream -- or, for an RSD
student in one step, the student's noise map after the prior).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from rsd_deploy.errors import ShapeError
from rsd_deploy.models.schedule import Schedule

#: x0 prediction from the UNSCALED latent z_t at step index ``step`` (the callee scales the input)
DenoiseFn = Callable[[torch.Tensor, int, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
Denoiser = Union[nn.Module, Callable[..., torch.Tensor]]


@dataclass(frozen=True)
class SamplingNoise:
    """All noise one sampling run consumes, float32 NCHW at latent size (B, C, h, w).

    ``prior``: eps of z_T = z_y + kappa*sqrt(eta_T)*eps (3 ch). ``student``: RSD noise map
    (noise_channels ch) or None. ``steps``: one map per ResShift step in draw order (step T-1
    first; T drawn, the last one unused), empty for one-step models.
    """

    prior: torch.Tensor
    student: Optional[torch.Tensor] = None
    steps: Tuple[torch.Tensor, ...] = field(default_factory=tuple)

    @classmethod
    def from_list(cls, noises: Sequence[torch.Tensor], noise_channels: int, multistep: bool) -> "SamplingNoise":
        """Build from the sampler convention: [prior, noise_map] (one-step RSD), [prior] (SinSR),
        [prior, step T-1, ..., step 0] (multi-step ResShift)."""
        noises = list(noises)
        if not noises:
            raise ShapeError("no noise tensors given; pass at least the prior noise")
        prior, rest = noises[0], noises[1:]
        if multistep:
            return cls(prior=prior, steps=tuple(rest))
        if noise_channels:
            if len(rest) != 1:
                raise ShapeError(f"an RSD student needs [prior, noise_map]; got {len(noises)} tensors")
            return cls(prior=prior, student=rest[0])
        if rest:
            raise ShapeError(f"a one-step model without a noise map needs [prior]; got {len(noises)} tensors")
        return cls(prior=prior)

    def to(self, device: torch.device | str) -> "SamplingNoise":
        return SamplingNoise(
            prior=self.prior.to(device),
            student=None if self.student is None else self.student.to(device),
            steps=tuple(s.to(device) for s in self.steps),
        )

    @staticmethod
    def cat(items: Sequence["SamplingNoise"]) -> "SamplingNoise":
        """Concatenate along the batch axis."""
        first = items[0]
        return SamplingNoise(
            prior=torch.cat([n.prior for n in items]),
            student=None if first.student is None else torch.cat([n.student for n in items]),  # type: ignore[misc]
            steps=tuple(torch.cat([n.steps[i] for n in items]) for i in range(len(first.steps))),
        )


def sample(denoise: DenoiseFn, schedule: Schedule, z_y: torch.Tensor, lq: torch.Tensor, noises: SamplingNoise,
           multistep: Optional[bool] = None, trajectory: Optional[List[dict]] = None) -> torch.Tensor:
    """z_T = schedule.prior(z_y, noises.prior), then the denoiser: the final latent (to decode).

    One step (SinSR / RSD): x0 = denoise(z_T, T-1, lq, noises.student). Multi-step ResShift: for
    i = T-1 .. 0, x0 = denoise(z_i, i, lq, None) and z_{i-1} = schedule.step(i, z_i, x0, noises.steps[k]);
    the result is the last x0's posterior mean (= x0). ``multistep`` None: multi-step iff
    ``noises.steps`` is non-empty. ``trajectory``: a list gets one dict per step (t, x0, sample).
    z_y (B, 3, h, w) encoder latent of the bicubic-x4 LR image; lq (B, 3, h, w) LR image in [-1, 1].
    """
    multistep = bool(noises.steps) if multistep is None else multistep
    T = schedule.steps
    z = schedule.prior(z_y, noises.prior)
    if not multistep:
        return denoise(z, T - 1, lq, noises.student)
    if noises.student is not None:
        raise ShapeError("multi-step ResShift sampling takes no student noise map; an RSD student runs in one step")
    if len(noises.steps) < T - 1:
        raise ShapeError(f"multi-step sampling over {T} steps needs {T - 1} step noises (T-1 .. 1); "
                         f"got {len(noises.steps)}")
    for k, i in enumerate(range(T - 1, -1, -1)):
        x0 = denoise(z, i, lq, None)
        z = schedule.step(i, z, x0, noises.steps[k] if i > 0 else None)
        if trajectory is not None:
            trajectory.append({"t": i, "x0": x0, "sample": z})
    return z


def unet_denoiser(unet: Denoiser, schedule: Schedule) -> DenoiseFn:
    """A PyTorch UNet ``unet(x, t, lq, noise_map)`` as a :data:`DenoiseFn` (input scaled by the schedule)."""
    def denoise(z_t: torch.Tensor, step: int, lq: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        t = torch.full((z_t.shape[0],), step, dtype=torch.int64, device=z_t.device)
        return unet(schedule.scale_input(z_t, step), t, lq, noise)

    return denoise


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


def prior_sample(schedule: Schedule, z_y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z_T = z_y + kappa sqrt(eta_{T-1}) eps (kept for the public API: ``schedule.prior``)."""
    return schedule.prior(z_y, eps)


@torch.no_grad()
def sample_resshift(unet: Denoiser, schedule: Schedule, z_y: torch.Tensor, lq: torch.Tensor,
                    generator: Optional[torch.Generator] = None,
                    noises: Optional[Sequence[torch.Tensor]] = None,
                    trajectory: Optional[List[dict]] = None) -> torch.Tensor:
    """ResShift ancestral sampling with a PyTorch UNet, T UNet calls: :func:`sample` (multi-step).

    ``noises``: T + 1 tensors shaped like z_y (prior, then steps T-1 .. 0), or drawn from ``generator``
    in that order. ``trajectory``: see :func:`sample`.
    """
    if _noise_channels(unet):
        raise ValueError("sample_resshift runs a ResShift teacher; an RSD student (noise_channels > 0) samples "
                         "in one step with sample_onestep")
    source = _NoiseSource(noises, generator)
    prior = source.next(z_y.shape, z_y)
    steps = tuple(source.next(z_y.shape, z_y) for _ in range(schedule.steps))  # step 0's is drawn and unused
    source.check_consumed()
    return sample(unet_denoiser(unet, schedule), schedule, z_y, lq, SamplingNoise(prior, None, steps),
                  multistep=True, trajectory=trajectory)


@torch.no_grad()
def sample_onestep(unet: Denoiser, schedule: Schedule, z_y: torch.Tensor, lq: torch.Tensor,
                   generator: Optional[torch.Generator] = None,
                   noises: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """SinSR / RSD with a PyTorch UNet: :func:`sample` in one step (x0 at t = T-1 from the prior).

    ``noises``: [prior] for SinSR, [prior, noise map (B, noise_channels, h, w)] for an RSD student.
    """
    source = _NoiseSource(noises, generator)
    prior = source.next(z_y.shape, z_y)
    nc = _noise_channels(unet)
    student = source.next((z_y.shape[0], nc, *z_y.shape[2:]), z_y) if nc else None
    source.check_consumed()
    return sample(unet_denoiser(unet, schedule), schedule, z_y, lq, SamplingNoise(prior, student),
                  multistep=False)
