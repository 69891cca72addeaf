"""Upscale files and folders: collect inputs, plan safe output names, run, report failures.

A bad file never stops the batch: its one-line error is logged and kept in the report, the other
files are still processed. Outputs are written atomically and never overwrite an input.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from rsd_deploy.errors import ImageIOError, RSDError
from rsd_deploy.pipeline.image_io import SUPPORTED_EXTENSIONS, image_files, read_image, write_image_atomic
from rsd_deploy.pipeline.loading import ModelSource, resolve_backend
from rsd_deploy.pipeline.sr_pipeline import SRPipeline
from rsd_deploy.types import TileConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpscaleConfig:
    """Everything one ``rsd-upscale`` run needs. Output name: ``<stem><suffix>.png`` in ``output_dir``."""

    inputs: Tuple[Path, ...]
    output_dir: Path
    source: ModelSource = ModelSource()
    tiling: TileConfig = TileConfig()
    seed: int = 0
    suffix: str = "_x4"
    progress: bool = True


@dataclass(frozen=True)
class FileFailure:
    path: Path
    message: str  # one line, names the file
    exit_code: int


@dataclass
class BatchReport:
    written: List[Tuple[Path, Path]] = field(default_factory=list)  # (input, output)
    failures: List[FileFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every file succeeded, else the exit code of the first failure."""
        return self.failures[0].exit_code if self.failures else 0


def _failure(path: Path, error: RSDError) -> FileFailure:
    message = str(error)
    if not message.startswith(str(path)):
        message = f"{path}: {message}"
    return FileFailure(path, message, error.exit_code)


def collect_inputs(paths: Sequence[Path]) -> Tuple[List[Path], List[FileFailure]]:
    """Files as given, folders expanded (not recursive) to their image files, sorted, deduplicated."""
    files: List[Path] = []
    failures: List[FileFailure] = []
    seen = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = image_files(p)
            if not found:
                failures.append(_failure(p, ImageIOError(
                    f"{p}: no images in this folder ({', '.join(SUPPORTED_EXTENSIONS)})")))
            candidates = found
        elif p.exists():
            candidates = [p]
        else:
            failures.append(_failure(p, ImageIOError(f"{p}: no such file or folder; check the path")))
            continue
        for c in candidates:
            key = c.resolve()
            if key not in seen:
                seen.add(key)
                files.append(c)
    return files, failures


def plan_outputs(inputs: Sequence[Path], output_dir: Path,
                 suffix: str) -> Tuple[List[Tuple[Path, Path]], List[FileFailure]]:
    """(input, output) pairs; an output that would overwrite an input, or another input's output,
    is a failure for that input."""
    input_keys: Dict[Path, Path] = {p.resolve(): p for p in inputs}
    claimed: Dict[Path, Path] = {}
    jobs: List[Tuple[Path, Path]] = []
    failures: List[FileFailure] = []
    for src in inputs:
        dst = output_dir / f"{src.stem}{suffix}.png"
        key = dst.resolve()
        if key in input_keys:
            failures.append(_failure(src, ImageIOError(
                f"{src}: output {dst} would overwrite the input {input_keys[key]}; choose another -o folder")))
        elif key in claimed:
            failures.append(_failure(src, ImageIOError(
                f"{src}: output {dst} is also the output of {claimed[key]}; rename one of them")))
        else:
            claimed[key] = src
            jobs.append((src, dst))
    return jobs, failures


def prepare_output_dir(output_dir: Path) -> None:
    """Create the output folder (and parents) or raise a one-line ImageIOError."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageIOError(f"{output_dir}: cannot create the output folder ({e.strerror or e}); "
                           f"choose a writable -o folder") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ImageIOError(f"{output_dir}: output folder is not writable; choose a writable -o folder")


def upscale_files(config: UpscaleConfig, pipeline: Optional[SRPipeline] = None) -> BatchReport:
    """Upscale every input; returns which files were written and which failed (and why).

    Raises RSDError only for problems of the whole run (bad options, unusable output folder,
    model that cannot load). ``pipeline`` overrides the one built from ``config.source``.
    """
    start = time.perf_counter()
    config.tiling.validate()
    inputs, failures = collect_inputs(config.inputs)
    report = BatchReport(failures=failures)
    for f in failures:
        logger.error("%s", f.message)
    if not inputs:
        report.seconds = time.perf_counter() - start
        return report
    prepare_output_dir(config.output_dir)
    jobs, clashes = plan_outputs(inputs, config.output_dir, config.suffix)
    for f in clashes:
        logger.error("%s", f.message)
    report.failures.extend(clashes)
    if pipeline is None:
        backend, info = resolve_backend(config.source)
        pipeline = SRPipeline(backend, info, config.tiling, seed=config.seed, progress=config.progress)
    # disable=None: tqdm hides the bar when stderr is not a terminal (logs, CI)
    bar = tqdm(jobs, desc="upscaling", unit="img", disable=None if config.progress and jobs else True)
    for src, dst in bar:
        bar.set_postfix_str(src.name, refresh=False)
        try:
            try:
                lr = read_image(src)
                canvas = pipeline.upscale_image(lr)
                write_image_atomic(dst, canvas.pixels)
            except (torch.OutOfMemoryError, MemoryError):
                raise RSDError(f"{src}: out of memory; use a smaller --tile or --tile-batch") from None
        except RSDError as e:
            failure = _failure(src, e)
            report.failures.append(failure)
            logger.error("%s", failure.message)
            continue
        report.written.append((src, dst))
        logger.debug("%s -> %s (%dx%d -> %dx%d)", src, dst, lr.width, lr.height, 4 * lr.width, 4 * lr.height)
    pipeline.backend.close()
    report.seconds = time.perf_counter() - start
    return report
