"""Upscale files and folders: collect inputs, plan safe output names, run, report failures.

A bad file never stops the batch, whatever goes wrong with it (a project error, cv2.error, an ONNX
Runtime ValueError, NaN/Inf outputs): its one-line error is logged and kept in the report, the other
files are still processed. Outputs are written atomically and never overwrite an input. Files a folder
holds but that are not processed (GIF and other formats, dangling symlinks, this run's own earlier
``*_x4.png`` outputs when ``-o`` is the input folder) are named in a ``skipped:`` warning.
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

from rsd_deploy.errors import ConfigError, ImageIOError, RSDError
from rsd_deploy.pipeline.image_io import (DEFAULT_MAX_OUTPUT_MEGAPIXELS, SUPPORTED_EXTENSIONS, image_files, read_image,
                                         write_image_atomic)
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
    max_output_megapixels: Optional[float] = DEFAULT_MAX_OUTPUT_MEGAPIXELS  # None: only the machine's memory

    def validate(self) -> None:
        if not 0 <= self.seed < 2 ** 64:
            raise ConfigError(f"--seed {self.seed} is out of range; use 0 .. 2^64-1")
        if self.max_output_megapixels is not None and not self.max_output_megapixels > 0:
            raise ConfigError(f"--max-output-megapixels {self.max_output_megapixels} must be positive")


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


#: file kinds people keep beside their photos that this tool does not read: named when a folder is skipped
_UNSUPPORTED_IMAGES = {".gif": "GIF", ".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".jxl": "JPEG XL",
                       ".svg": "SVG", ".ico": "ICO", ".psd": "PSD", ".exr": "OpenEXR", ".hdr": "Radiance HDR",
                       ".dng": "raw", ".cr2": "raw", ".nef": "raw", ".arw": "raw"}
#: exit code of a file that failed with an exception the project did not anticipate (docs/CLI.md)
EXIT_UNEXPECTED = 70


def _type_name(error: BaseException) -> str:
    """``ValueError``, ``cv2.error``, ``onnxruntime...Fail``: qualified unless built in."""
    kind = type(error)
    module = kind.__module__.replace("cv2.cv2", "cv2")
    return kind.__name__ if module == "builtins" else f"{module}.{kind.__name__}"


def skipped_in_folder(folder: Path, outputs_of: Optional[str] = None) -> List[str]:
    """One ``skipped: <file>: <why>; <what to do>`` line per file of ``folder`` that looks like an image but
    will not be processed. ``outputs_of``: a suffix (``_x4``) whose ``*<suffix>.png`` files are this tool's
    earlier outputs (``-o`` is this folder) and are skipped too."""
    lines: List[str] = []
    for c in sorted(folder.iterdir()):
        if c.name.startswith("."):
            continue
        ext = c.suffix.lower()
        if c.is_symlink() and not c.exists():
            lines.append(f"skipped: {c}: a dangling symlink (target {os.readlink(c)} is missing); fix or remove it")
        elif ext in _UNSUPPORTED_IMAGES and c.is_file():
            lines.append(f"skipped: {c}: {_UNSUPPORTED_IMAGES[ext]} is not supported; convert it to PNG "
                         f"({', '.join(SUPPORTED_EXTENSIONS)} are read)")
    if outputs_of:
        earlier = [c for c in image_files(folder) if c.name.endswith(f"{outputs_of}.png")]
        if earlier:
            lines.append(f"skipped: {len(earlier)} earlier output(s) in {folder} (*{outputs_of}.png, e.g. "
                         f"{earlier[0].name}): -o is the input folder; pass such a file by name to upscale it again")
    return lines


def collect_inputs(paths: Sequence[Path], output_dir: Optional[Path] = None,
                   suffix: str = "_x4") -> Tuple[List[Path], List[FileFailure]]:
    """Files as given, folders expanded (not recursive) to their image files, sorted, deduplicated.

    A folder that is also ``output_dir`` does not contribute its ``*<suffix>.png`` files (earlier outputs);
    what a folder holds but is not processed is logged as ``skipped: ...``."""
    files: List[Path] = []
    failures: List[FileFailure] = []
    seen = set()
    out_key = Path(output_dir).resolve() if output_dir is not None else None
    for p in paths:
        p = Path(p)
        if p.is_dir():
            is_output = out_key is not None and p.resolve() == out_key
            found = [c for c in image_files(p) if not (is_output and c.name.endswith(f"{suffix}.png"))]
            for line in skipped_in_folder(p, suffix if is_output else None):
                logger.warning("%s", line)
            if not found:
                failures.append(_failure(p, ImageIOError(
                    f"{p}: no images in this folder ({', '.join(SUPPORTED_EXTENSIONS)})")))
            candidates = found
        elif p.exists():
            candidates = [p]
        elif p.is_symlink():
            failures.append(_failure(p, ImageIOError(
                f"{p}: a dangling symlink (its target {os.readlink(p)} is missing); fix or remove the link")))
            continue
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


def _keep_earlier_outputs(jobs: List[Tuple[Path, Path]], config: UpscaleConfig) -> List[Tuple[Path, Path]]:
    """With -o one of the input folders, its ``*<suffix>.png`` files are earlier outputs (or the user's files):
    neither upscaled again nor overwritten; the input they belong to is skipped with a warning."""
    out_key = config.output_dir.resolve()
    if not any(Path(p).is_dir() and Path(p).resolve() == out_key for p in config.inputs):
        return jobs
    kept = []
    for src, dst in jobs:
        if dst.exists():
            logger.warning("skipped: %s: its output %s is already in the folder (an earlier run's?); remove it or "
                           "choose another -o folder to redo it", src, dst.name)
        else:
            kept.append((src, dst))
    return kept


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
    config.validate()
    inputs, failures = collect_inputs(config.inputs, config.output_dir, config.suffix)
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
    jobs = _keep_earlier_outputs(jobs, config)
    if pipeline is None:
        backend, info = resolve_backend(config.source)
        pipeline = SRPipeline(backend, info, config.tiling, seed=config.seed, progress=config.progress)
    # disable=None: tqdm hides the bar when stderr is not a terminal (logs, CI)
    bar = tqdm(jobs, desc="upscaling", unit="img", disable=None if config.progress and jobs else True)
    for src, dst in bar:
        bar.set_postfix_str(src.name, refresh=False)
        try:
            try:
                lr = read_image(src, scale=4, max_output_megapixels=config.max_output_megapixels)
                canvas = pipeline.upscale_image(lr)
                write_image_atomic(dst, canvas.pixels)
            except (torch.OutOfMemoryError, MemoryError):
                raise RSDError(f"{src}: out of memory; use a smaller --tile or --tile-batch") from None
        except RSDError as e:
            failure = _failure(src, e)
            report.failures.append(failure)
            logger.error("%s", failure.message)
            continue
        except Exception as e:  # noqa: BLE001 - anything else fails this file only (cv2.error, ORT ValueError)
            logger.debug("%s failed", src, exc_info=True)
            detail = next((line.strip() for line in reversed(str(e).splitlines()) if line.strip()), "")
            failure = FileFailure(src, f"{src}: unexpected {_type_name(e)}" + (f" ({detail})" if detail else "")
                                  + "; run with -v for details", EXIT_UNEXPECTED)
            report.failures.append(failure)
            logger.error("%s", failure.message)
            continue
        report.written.append((src, dst))
        logger.debug("%s -> %s (%dx%d -> %dx%d)", src, dst, lr.width, lr.height, 4 * lr.width, 4 * lr.height)
    pipeline.backend.close()
    report.seconds = time.perf_counter() - start
    return report
