"""Atomic training checkpoints (resume state) and the deployable export of the trained network.

A training checkpoint is one ``torch.save`` dict holding only tensors, numbers, strings, lists and
dicts, so it loads back with ``weights_only=True``:
``{"format", "step", "config", "world_size", "models": {name: state_dict}, "optimizers": {name: state},
"rng": {"torch": ByteTensor, "generator": ByteTensor, "cuda": [...]}, "data": {"epoch", "consumed"}}``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from rsd_deploy.errors import CheckpointError
from rsd_deploy.fileio import atomic_output

logger = logging.getLogger(__name__)

FORMAT = "rsd-deploy-train-v1"


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temp file in the same folder, then ``os.replace`` (never a half-written file)."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_training_state(path: Path, state: Mapping[str, Any], keep: int = 0) -> Path:
    """Write a resume checkpoint atomically; with ``keep > 0`` delete older ``step_*.pt`` beyond ``keep``."""
    out = atomic_torch_save(dict(state, format=FORMAT), path)
    if keep > 0:
        old = sorted(Path(path).parent.glob("step_*.pt"), key=lambda p: p.stat().st_mtime)
        for stale in old[:-keep]:
            stale.unlink(missing_ok=True)
    logger.info("checkpoint written: %s", out)
    return out


def load_training_state(path: Path) -> Dict[str, Any]:
    """Read a resume checkpoint written by :func:`save_training_state` (``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no training checkpoint (step_*.pt) in {path}; pass the checkpoint file to --resume")
        path = latest
    if not path.is_file():
        raise CheckpointError(f"resume checkpoint {path} not found; pass a step_*.pt file or its run folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise CheckpointError(f"{path} cannot be read as a training checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rsd-train checkpoint (to start from weights, set teacher: instead)")
    state["path"] = str(path)
    return state


def latest_checkpoint(folder: Path) -> Optional[Path]:
    files: List[Path] = sorted(Path(folder).glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return files[-1] if files else None


def rng_state(generator: torch.Generator) -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_model(model: torch.nn.Module, path: Path, metadata: Mapping[str, Any]) -> Path:
    """Write the trained UNet as safetensors that ``load_checkpoint``, ``rsd-upscale`` and ``rsd-export`` take."""
    from rsd_deploy.checkpoint import save_safetensors

    out = save_safetensors(model, path, {f"rsd_deploy.train.{k}": str(v) for k, v in metadata.items()})
    logger.info("exported %s", out)
    return out
