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
    """The checkpoint's deployable network (the EMA of the UNet methods, the autoencoder of method vq).

    Its architecture comes from the checkpoint (``network_config``); checkpoints written before it was
    recorded fall back to shape inference, which cannot tell ``norm_groups`` and assumes the official 32.
    """
    from rsd_deploy.checkpoint import save_safetensors, state_dict_to_model, to_official_state_dict
    from rsd_deploy.checkpoint.detect import UNET, detect_kind
    from rsd_deploy.config import UNetConfig, VQConfig
    from rsd_deploy.models.unet import UNetSwin

    state = load_training_state(checkpoint)
    ckpt = Path(state["path"])
    name = state.get("network") or "ema"
    weights = state.get("models", {}).get(name)
    if not isinstance(weights, dict):
        raise CheckpointError(f"{ckpt} holds no deployable network ({name!r}); export a checkpoint written by "
                              "rsd-train")
    config = None
    if isinstance(state.get("network_config"), dict):
        config_type = UNetConfig if detect_kind(weights) == UNET else VQConfig
        config = config_type.from_dict(state["network_config"])
    net = state_dict_to_model(weights, config=config, what=f"{ckpt} ({name})")
    step = int(state["step"])
    method = state.get("config", {}).get("method", "rsd")
    official_groups = net.config.norm_groups == type(net.config)().norm_groups
    if output is None:
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        # the official .pth layout has no room for a non-default norm_groups: safetensors carries the config
        stem = f"{method}_ema_model_{step}" if name == "ema" else f"{method}_model_{step}"
        output = run / f"{stem}{'.pth' if official_groups else '.safetensors'}"
    output = Path(output)
    if output.exists() and output.resolve() == ckpt.resolve():
        raise CheckpointError(f"{output} is the checkpoint being exported; choose another -o")
    if output.suffix.lower() == ".safetensors":
        out = save_safetensors(net, output, {"rsd_deploy.train.method": method, "rsd_deploy.train.iteration": str(step)})
    else:
        if not official_groups:
            raise CheckpointError(f"{ckpt}: its network uses norm_groups={net.config.norm_groups}, which the official "
                                  f".pth layout cannot record; export to a .safetensors file (-o NAME.safetensors)")
        weights = to_official_state_dict(net) if isinstance(net, UNetSwin) else net.state_dict()
        with atomic_output(output) as tmp:
            torch.save({k: v.contiguous() for k, v in weights.items()}, tmp)
        out = output
    logger.info("exported the %s network of %s (step %d) to %s", name, ckpt, step, out)
    return out
