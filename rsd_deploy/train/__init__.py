"""Training: RSD distillation, the SinSR baseline and ResShift teacher training (``rsd-train``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rsd_deploy.train.config import ConfigError, TrainConfig, load_config
from rsd_deploy.train.methods import build_method

__all__ = ["TrainConfig", "load_config", "ConfigError", "build_method", "train", "export_checkpoint"]


def train(cfg: TrainConfig, resume: Optional[str | Path] = None, new_run: bool = False) -> Optional[Path]:
    """Run a whole training (single process or one torchrun rank); returns the exported checkpoint path.

    ``resume``: a checkpoint, checkpoint folder or run folder to continue; ``new_run``: start in a
    fresh sibling folder when ``output_dir`` already holds a run (see :mod:`rsd_deploy.train.rundir`).
    """
    from rsd_deploy.train.distributed import cleanup
    from rsd_deploy.train.loops import Trainer

    trainer = Trainer(cfg, resume=resume, new_run=new_run)
    try:
        return trainer.run()
    finally:
        trainer.close()
        cleanup()


def export_checkpoint(checkpoint: str | Path, output: Optional[str | Path] = None) -> Path:
    """The EMA network of any training checkpoint (or the newest readable one of a run folder) as a file
    the official code and ``load_checkpoint`` read: ``.pth`` (default) holds the official key layout with
    its buffers, like the released ``ema_model_2800.pth``; ``.safetensors`` is rsd-deploy's own form."""
    from rsd_deploy.train.export import export_ema

    return export_ema(Path(checkpoint), Path(output) if output is not None else None)
