"""ResShift's residual-shifting schedule (exponential), with the v1 (T=15) and v3 (T=4) presets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import numpy as np

PRESETS: Dict[str, Dict[str, float]] = {
    "v1": {"steps": 15, "min_noise_level": 0.04},  # realsr x4 v1/v2: teacher of SinSR and RSD
    "v3": {"steps": 4, "min_noise_level": 0.2},  # realsr x4 v3, bicsr x4
}


@dataclass(frozen=True)
class Schedule:
    """Arrays (float64, index i = 0..T-1, 0 = least noisy) of the residual-shifting diffusion.

    sqrt_eta[i] = s1 * (etas_end / s1) ** ((i / (T-1)) ** power), s1 = min(min_noise_level / kappa, min_noise_level);
    forward marginal N(z0 + eta_i (z_y - z0), kappa^2 eta_i I); posterior mean c1 z_i + c2 x0 with variance
    sigma^2 = kappa^2 eta_{i-1} alpha_i / eta_i; the UNet sees z_i / in_std[i], in_std = sqrt(kappa^2 eta + 1).
    """

    steps: int
    min_noise_level: float
    kappa: float = 2.0
    power: float = 0.3
    etas_end: float = 0.99
    sqrt_eta: np.ndarray = field(init=False, repr=False, compare=False)
    eta: np.ndarray = field(init=False, repr=False, compare=False)
    eta_prev: np.ndarray = field(init=False, repr=False, compare=False)
    alpha: np.ndarray = field(init=False, repr=False, compare=False)
    c1: np.ndarray = field(init=False, repr=False, compare=False)
    c2: np.ndarray = field(init=False, repr=False, compare=False)
    variance: np.ndarray = field(init=False, repr=False, compare=False)
    sigma: np.ndarray = field(init=False, repr=False, compare=False)
    in_std: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"steps must be an integer >= 2, got {self.steps!r}")
        if not 0 < self.min_noise_level < self.etas_end:
            raise ValueError(f"min_noise_level must be in (0, etas_end={self.etas_end}), got {self.min_noise_level}")
        if self.kappa <= 0 or self.power <= 0:
            raise ValueError("kappa and power must be > 0")
        s1 = min(self.min_noise_level / self.kappa, self.min_noise_level)
        i = np.arange(self.steps, dtype=np.float64)
        sqrt_eta = s1 * (self.etas_end / s1) ** ((i / (self.steps - 1)) ** self.power)
        eta = sqrt_eta ** 2
        eta_prev = np.concatenate([[0.0], eta[:-1]])
        alpha = eta - eta_prev
        variance = self.kappa ** 2 * eta_prev * alpha / eta
        arrays = dict(sqrt_eta=sqrt_eta, eta=eta, eta_prev=eta_prev, alpha=alpha, c1=eta_prev / eta,
                      c2=alpha / eta, variance=variance, sigma=np.sqrt(variance),
                      in_std=np.sqrt(self.kappa ** 2 * eta + 1.0))
        for name, value in arrays.items():
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @classmethod
    def preset(cls, name: str) -> "Schedule":
        """'v1' (15 steps, min noise 0.04) or 'v3' (4 steps, min noise 0.2); kappa 2, power 0.3, end 0.99."""
        if name not in PRESETS:
            raise ValueError(f"unknown schedule preset {name!r}; choose one of {sorted(PRESETS)}")
        p = PRESETS[name]
        return cls(steps=int(p["steps"]), min_noise_level=p["min_noise_level"])

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        return self.steps

    @property
    def prior_std(self) -> float:
        """Std of the prior z_T = z_y + kappa sqrt(eta_{T-1}) eps."""
        return float(self.kappa * self.sqrt_eta[-1])

    def prior(self, z_y, noise):
        """z_T = z_y + kappa sqrt(eta_{T-1}) noise: where every sampler starts (tensors or arrays)."""
        return z_y + self.prior_std * noise

    def step(self, i: int, z_t, x0, noise=None):
        """One ancestral step z_i -> z_{i-1}: the posterior mean c1[i] z_i + c2[i] x0, plus sigma[i] noise
        for i > 0 (at i = 0 the mean is the result and ``noise`` is ignored)."""
        self._check_step(i)
        mean = float(self.c1[i]) * z_t + float(self.c2[i]) * x0
        if i == 0:
            return mean
        if noise is None:
            raise ValueError(f"step {i} > 0 needs its noise (sigma {float(self.sigma[i]):.3g})")
        return mean + float(self.sigma[i]) * noise

    def scale_input(self, z_t, step: int):
        """The denoiser's input z_t / sqrt(kappa^2 eta_step + 1) (the UNet never sees z_t unscaled)."""
        self._check_step(step)
        return z_t / float(self.in_std[step])

    def input_scale(self, step: int) -> float:
        """1 / sqrt(kappa^2 eta_step + 1): what the UNet input is multiplied by."""
        self._check_step(step)
        return float(1.0 / self.in_std[step])

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.steps:
            raise ValueError(f"step must be in 0..{self.steps - 1}, got {step}")

    def to_dict(self) -> dict:
        return {"steps": self.steps, "min_noise_level": self.min_noise_level, "kappa": self.kappa,
                "power": self.power, "etas_end": self.etas_end}

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().values()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()
