"""The one place a config's ``method`` becomes its training method (imports every method)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rsd_deploy.train.config import Method as MethodName, TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from rsd_deploy.train.loops import Trainer
    from rsd_deploy.train.method import Method


def build_method(cfg: TrainConfig, trainer: "Trainer") -> "Method":
    if cfg.method == MethodName.RSD:
        from rsd_deploy.train.rsd import RSDMethod

        return RSDMethod(cfg, trainer)
    if cfg.method == MethodName.VQ:
        from rsd_deploy.train.autoencoder import VQMethod

        return VQMethod(cfg, trainer)
    if cfg.method == MethodName.SINSR:
        from rsd_deploy.train.sinsr import SinSRMethod

        return SinSRMethod(cfg, trainer)
    from rsd_deploy.train.teacher import TeacherMethod

    return TeacherMethod(cfg, trainer)
