"""Exponential moving average of a model's parameters (buffers copied)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after every optimiser step.

    The shadow is a frozen deep copy of the model in fp32 on the model's device.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            from rsd_deploy.errors import RSDError

            raise RSDError(f"optim.ema must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        source = unwrap(model)
        for ema_p, p in zip(self.shadow.parameters(), source.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - self.decay)
        for ema_b, b in zip(self.shadow.buffers(), source.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
