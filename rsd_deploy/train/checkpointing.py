"""Atomic training checkpoints (resume state) and the deployable export of the trained network.

A training checkpoint is one ``torch.save`` dict holding only tensors, numbers, strings, lists and
dicts, so it loads back with ``weights_only=True``:
``{"format", "step", "config", "world_size", "models": {name: state_dict}, "optimizers": {name: state},
"rng": {"ranks": [{"torch", "generator", "cuda"} per rank]}, "data": {"epoch", "consumed", "queues"}}``.

Checkpoints are named ``step_<7 digits>.pt``; a checkpoint that would replace a file this run did
not write gets a ``-<k>`` suffix instead (``step_0000004-1.pt``), so no earlier file is overwritten.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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


def checkpoint_step(path: Path) -> Tuple[int, int]:
    """``step_0000004.pt`` -> (4, 0); ``step_0000004-1.pt`` -> (4, 1); (-1, 0) for other names."""
    stem = Path(path).stem
    if not stem.startswith("step_"):
        return (-1, 0)
    step, _, suffix = stem[5:].partition("-")
    try:
        return (int(step), int(suffix or 0))
    except ValueError:
        return (-1, 0)


def checkpoints_in(folder: Path) -> List[Path]:
    """The ``step_*.pt`` files of a folder, oldest step first."""
    found = [p for p in Path(folder).glob("step_*.pt") if checkpoint_step(p)[0] >= 0]
    return sorted(found, key=checkpoint_step)


def free_checkpoint_path(folder: Path, step: int, written: Sequence[Path] = ()) -> Path:
    """``step_<step>.pt``, or the first ``-<k>`` variant, that is free or was written by this run."""
    base = Path(folder) / f"step_{step:07d}.pt"
    candidate, k = base, 0
    while candidate.exists() and candidate not in written:
        k += 1
        candidate = base.with_name(f"step_{step:07d}-{k}.pt")
    return candidate


def save_training_state(path: Path, state: Mapping[str, Any], keep: int = 0,
                        written: Optional[List[Path]] = None) -> Path:
    """Write a resume checkpoint atomically and append it to ``written`` (this run's checkpoints).

    With ``keep > 0`` the oldest files of ``written`` beyond ``keep`` are deleted: a run only ever
    deletes checkpoints it wrote itself, never an earlier run's.
    """
    out = atomic_torch_save(dict(state, format=FORMAT), path)
    if written is not None:
        if out not in written:
            written.append(out)
        if keep > 0:
            while len(written) > keep:
                written.pop(0).unlink(missing_ok=True)
    logger.info("checkpoint written: %s", out)
    return out


def _read(path: Path) -> Dict[str, Any]:
    from rsd_deploy.checkpoint import read_checkpoint_file

    if not path.is_file():
        raise CheckpointError(f"resume checkpoint {path} not found; pass a step_*.pt file or its run folder")
    try:
        state, _ = read_checkpoint_file(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; pass the run folder to --resume to fall back to the previous checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rsd-train checkpoint (to start from weights, set teacher: instead)")
    state["path"] = str(path)
    return state


def checkpoint_folder(path: Path) -> Path:
    """Where a run keeps its checkpoints: ``RUN/checkpoints`` for a run folder, else the folder itself."""
    path = Path(path)
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def load_training_state(path: Path) -> Dict[str, Any]:
    """Read a resume checkpoint written by :func:`save_training_state` (``weights_only=True``).

    ``path`` is a checkpoint file, a checkpoint folder or a run folder (holding ``checkpoints/``).
    For a folder the newest readable checkpoint is taken: a truncated or corrupt newer one (a
    crash while copying, a full disk) is reported and skipped; ``state["skipped"]`` lists those.
    """
    path = Path(path)
    if not path.is_dir():
        return dict(_read(path), skipped=[])
    folder = checkpoint_folder(path)
    candidates = checkpoints_in(folder)
    if not candidates:
        raise CheckpointError(f"no training checkpoint (step_*.pt) in {folder}; pass a run folder or a "
                              "step_*.pt file to --resume")
    skipped: List[str] = []
    for candidate in reversed(candidates):
        try:
            state = _read(candidate)
        except CheckpointError as exc:
            logger.warning("%s; trying the previous checkpoint", str(exc).split("; pass the run folder")[0])
            skipped.append(str(candidate))
            continue
        if skipped:
            logger.warning("resuming from %s, the newest readable checkpoint (skipped: %s)", candidate,
                           ", ".join(Path(s).name for s in skipped))
        state["skipped"] = skipped
        return state
    raise CheckpointError(f"none of the {len(candidates)} checkpoints in {folder} can be read; start a new run "
                          "with --new-run")


def latest_checkpoint(folder: Path) -> Optional[Path]:
    files = checkpoints_in(folder)
    return files[-1] if files else None


def rng_state(generator: torch.Generator) -> Dict[str, Any]:
    """This process's random state: the global torch (and CUDA) generators and the training generator."""
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
