"""The run folder (``output_dir``): checked before any long work, never taken over silently.

A folder *holds a run* when it has training checkpoints, ``metrics.jsonl`` or an exported
``*_ema.safetensors``. Starting without ``--resume`` into such a folder is refused with the command
that resumes it; ``--new-run`` starts in the first free sibling (``NAME-2``, ``NAME-3`` ...) and
leaves the earlier run as it is. Nothing here deletes or moves a file.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import List, Optional

from rsd_deploy.errors import ConfigError
from rsd_deploy.fileio import atomic_write_text
from rsd_deploy.train.checkpointing import checkpoints_in

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


def check_writable(folder: Path, what: str = "output_dir") -> None:
    """One-line :class:`ConfigError` unless ``folder`` is (or can be created as) a writable folder."""
    folder = Path(folder)
    if str(folder) in ("", "."):
        return _probe(Path("."), what)
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            if parent == folder:
                raise ConfigError(f"{what} {folder} is a file, not a folder; choose another {what} (-o DIR)")
            raise ConfigError(f"{what} {folder} is under {parent}, which is a file; choose another {what} (-o DIR)")
        if parent.exists():
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {folder} ({exc.strerror}); choose a writable {what} (-o DIR)") from None
    _probe(folder, what)


def _probe(folder: Path, what: str) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".rsd-train-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{what} {folder} is not writable ({exc.strerror}); choose a writable {what} (-o DIR) "
                          "or fix its permissions") from None


def describe_run(folder: Path) -> Optional[str]:
    """A short description of the run ``folder`` holds (latest checkpoint, last logged step), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    checkpoints = checkpoints_in(folder / "checkpoints")
    if checkpoints:
        return f"checkpoints up to {checkpoints[-1].name}"
    last = last_logged_step(folder / METRICS)
    if last is not None:
        return f"metrics up to step {last}, no checkpoint"
    exported = sorted(folder.glob("*_ema*.safetensors"))
    if exported:
        return f"an exported {exported[0].name}"
    return None


def next_free(folder: Path) -> Path:
    """``NAME-2``, ``NAME-3`` ... : the first sibling of ``folder`` that holds no run."""
    folder = Path(folder)
    k = 2
    while True:
        candidate = folder.with_name(f"{folder.name}-{k}")
        if describe_run(candidate) is None:
            return candidate
        k += 1


def _read_metrics(path: Path) -> List[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def last_logged_step(path: Path) -> Optional[int]:
    steps = [json.loads(line).get("step") for line in _read_metrics(path) if line.strip().startswith("{")]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def trim_metrics(path: Path, step: int) -> int:
    """Drop the lines logged after ``step`` (the resumed run logs them again); returns how many.

    A crash between checkpoints leaves lines past the checkpoint the run resumes from; keeping them
    would give repeated steps. Rewritten atomically.
    """
    lines = _read_metrics(Path(path))
    kept: List[str] = []
    dropped = 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1  # a half-written last line of the crashed run
            continue
        logged = record.get("step", record.get("at_step"))
        if isinstance(logged, int) and logged > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        logger.info("%s: dropped %d lines logged after step %d (the resumed run logs those steps again)",
                    path, dropped, step)
    return dropped
