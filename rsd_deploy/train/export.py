"""``rsd-train export CKPT``: the EMA of an intermediate (or final) training checkpoint as a deployable file.

The released RSD weights are the EMA at iteration 2800 of 3000 (``ema_model_2800.pth``); this makes
the same kind of file from any of our checkpoints: a plain state dict in the official key layout
(with the relative-position and shifted-window buffers the official loader expects), saved with
``torch.save`` so ``torch.load(weights_only=True)``, the official code and ``load_checkpoint`` read it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from rsd_deploy.errors import CheckpointError
from rsd_deploy.fileio import atomic_output
from rsd_deploy.train.checkpointing import load_training_state

logger = logging.getLogger(__name__)


def export_ema(checkpoint: Path, output: Optional[Path] = None) -> Path:
    from rsd_deploy.checkpoint import save_safetensors, state_dict_to_model, to_official_state_dict
    from rsd_deploy.models.unet import UNetSwin

    state = load_training_state(checkpoint)
    ckpt = Path(state["path"])
    ema = state.get("models", {}).get("ema")
    if not isinstance(ema, dict):
        raise CheckpointError(f"{ckpt} holds no EMA network; export a checkpoint written by rsd-train")
    net = state_dict_to_model(ema, what=f"{ckpt} (EMA)")
    if not isinstance(net, UNetSwin):  # pragma: no cover - training checkpoints hold UNets only
        raise CheckpointError(f"{ckpt}: the EMA is not a UNet")
    step = int(state["step"])
    method = state.get("config", {}).get("method", "rsd")
    if output is None:
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        output = run / f"{method}_ema_model_{step}.pth"
    output = Path(output)
    if output.exists() and output.resolve() == ckpt.resolve():
        raise CheckpointError(f"{output} is the checkpoint being exported; choose another -o")
    if output.suffix.lower() == ".safetensors":
        out = save_safetensors(net, output, {"rsd_deploy.train.method": method, "rsd_deploy.train.iteration": str(step)})
    else:
        with atomic_output(output) as tmp:
            torch.save({k: v.contiguous() for k, v in to_official_state_dict(net).items()}, tmp)
        out = output
    logger.info("exported the EMA of %s (step %d) to %s", ckpt, step, out)
    return out
