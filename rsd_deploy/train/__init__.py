"""Training: RSD distillation, the SinSR baseline and ResShift teacher training (``rsd-train``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from rsd_deploy.train.config import ConfigError, Method as MethodName, TrainConfig, load_config

if TYPE_CHECKING:
    from rsd_deploy.train.loops import Method, Trainer

__all__ = ["TrainConfig", "load_config", "ConfigError", "build_method", "train"]


def build_method(cfg: TrainConfig, trainer: "Trainer") -> "Method":
    if cfg.method == MethodName.RSD:
        from rsd_deploy.train.rsd import RSDMethod

        return RSDMethod(cfg, trainer)
    if cfg.method == MethodName.SINSR:
        from rsd_deploy.train.sinsr import SinSRMethod

        return SinSRMethod(cfg, trainer)
    from rsd_deploy.train.teacher import TeacherMethod

    return TeacherMethod(cfg, trainer)


def train(cfg: TrainConfig, resume: Optional[str | Path] = None) -> Optional[Path]:
    """Run a whole training (single process or one torchrun rank); returns the exported checkpoint path."""
    from rsd_deploy.train.distributed import cleanup
    from rsd_deploy.train.loops import Trainer

    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.run()
    finally:
        trainer.close()
        cleanup()
