"""What a training method is, and how it loads its networks: the layer below the loop and the methods.

``Method`` (implemented by ``rsd.RSDMethod``, ``sinsr.SinSRMethod``, ``teacher.TeacherMethod``), the
``Batch`` it consumes and ``load_network`` live here, so the methods and the loop (``loops.Trainer``)
both import this module and not each other.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional

import torch
from torch import nn

from rsd_deploy.train.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from rsd_deploy.train.loops import Trainer


def load_network(spec: str, what: str) -> nn.Module:
    """A checkpoint path, or "default" for the embedded demo model's UNet / VQ."""
    from rsd_deploy.checkpoint import load_checkpoint

    if spec == "default":
        from rsd_deploy.default_model import load_default_models

        unet, vq, info = load_default_models()
        if what == "vq":
            return vq
        if info["kind"] != "resshift-v1":
            # the shipped default is a distilled student; its teacher ships next to it when present
            from rsd_deploy.default_model import ASSETS

            teacher_file = ASSETS / info.get("teacher", "")
            if not info.get("teacher") or not teacher_file.is_file():
                raise ConfigError("the embedded default model is a student with no teacher file; set teacher: to a "
                                  "ResShift checkpoint")
            return load_checkpoint(teacher_file)
        return unet
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"{what} checkpoint {path} not found; fix `{what}:` in the config or pass {what}=PATH")
    return load_checkpoint(path)


@dataclass
class Batch:
    """One micro-batch in latent space. z0: E(HR); z_y: E(bicubic_x4(LR)); lq: LR in [-1, 1]; gt: HR image."""

    z0: torch.Tensor
    z_y: torch.Tensor
    lq: torch.Tensor
    gt: torch.Tensor


class Method(abc.ABC):
    """One training method. ``models`` / ``optimizers`` are checkpointed by name."""

    models: Dict[str, nn.Module]
    optimizers: Dict[str, torch.optim.Optimizer]
    export_stem: Optional[str] = None  # file stem of the exported network (default "<method>_ema")

    @abc.abstractmethod
    def step(self, trainer: "Trainer", iteration: int) -> Dict[str, float]:
        """Run one iteration (all its micro-batches and optimiser steps); return scalar logs."""

    @abc.abstractmethod
    def deployable(self) -> nn.Module:
        """The network to validate and export (the EMA student / EMA teacher)."""

    def validate(self, trainer: "Trainer") -> Optional[Dict[str, float]]:
        """Validation logs of a method that is not a sampler (the VQ); None: the trainer's SR validation."""
        return None

    @property
    def one_step(self) -> bool:
        """Whether the deployable network samples in one step (students) or T steps (teacher)."""
        return True
