"""Side-by-side evaluation of bicubic, a ResShift teacher and an RSD student (issue 12's result tables),
and the colour check of a model's outputs against their own bicubic upscale.

Every model row goes through exactly what ``rsd-upscale`` runs: ``resolve_backend(ModelSource(...))``
and ``SRPipeline`` (its default tiling, 64 LR px with 8 px overlap, and its seeded, position-keyed noise),
then the 8-bit file layout of ``SRPipeline.upscale_image``. The teacher's rows are the same weights run
as ``--model resshift-v1`` (all T steps) and as ``--model sinsr`` (one x0 prediction from the prior at
t = T-1). Every row and image uses the same seed, so every row draws the same prior noise. The bicubic
row is the pipeline's own conditioning upsample (``image_io.bicubic_x4``), rounded like an SR output.

Columns (``rsd_deploy.metrics``): Y-PSNR, SSIM on Y, colour error (mean |channel-mean shift| in 8-bit
levels) and detail ratio (mean gradient of Y over the ground truth's; a set's ratio is pooled: the mean
SR gradient over the mean GT gradient, see :func:`pooled_detail_ratio`; the per-image ratios and their
mean are in the JSON). Paired differences compare the
student with each other row image by image on Y-PSNR: mean, sample std, and wins (student higher).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rsd_deploy import metrics
from rsd_deploy.errors import ConfigError
from rsd_deploy.fileio import atomic_write_text
from rsd_deploy.pipeline.loading import ModelSource
from rsd_deploy.types import ModelKind, TileConfig

logger = logging.getLogger(__name__)

BICUBIC = "bicubic"
TEACHER_FULL = "teacher_15_steps"
TEACHER_ONE = "teacher_1_step"
STUDENT = "student_1_step"
COLUMNS = (("psnr_y", "Y-PSNR (dB)", 2), ("ssim_y", "SSIM (Y)", 4), ("colour_error", "colour error (levels)", 2),
           ("detail_ratio", "detail ratio (pooled)", 3),
           ("mean_of_image_detail_ratios", "detail ratio (mean of images)", 3), ("seconds", "s/image", 3))
PAIRED_METRIC = "psnr_y"
TITLE = "Model comparison (train/scripts/evaluate_models.py)"
COLOUR_LIMIT = 3.0  # issue 12: each realset65 output within 3 levels of its bicubic upscale


@dataclass(frozen=True)
class Contender:
    """One table row: a name and the model source rsd-upscale would be given for it."""

    name: str
    source: ModelSource
    label: str = ""


def contenders(vq: Optional[Path], teacher: Optional[Path] = None, student: Optional[str] = None,
               teacher_kind: ModelKind = ModelKind.RESSHIFT_V1, device: Optional[str] = None,
               threads: Optional[int] = None) -> List[Contender]:
    """The model rows: teacher (all steps, then its one-step x0) when ``teacher`` is given, then the student.

    ``student``: a checkpoint path, or "default" for the embedded demo model (which brings its own VQ).
    """
    if teacher_kind not in (ModelKind.RESSHIFT_V1, ModelKind.RESSHIFT_V3):
        raise ConfigError(f"the teacher runs as a multi-step ResShift model; got --teacher-kind {teacher_kind.value}")
    rows = []
    if teacher is not None:
        if vq is None:
            raise ConfigError("--teacher needs --vq (the VQ-f4 autoencoder the teacher was trained with)")
        steps = 4 if teacher_kind is ModelKind.RESSHIFT_V3 else 15
        rows.append(Contender(TEACHER_FULL, ModelSource(checkpoint=teacher, vq=vq, model=teacher_kind, device=device,
                                                        threads=threads), f"teacher, {steps} steps"))
        rows.append(Contender(TEACHER_ONE, ModelSource(checkpoint=teacher, vq=vq, model=ModelKind.SINSR, device=device,
                                                       threads=threads), "teacher, one-step x0 from t = T-1"))
    if student is not None:
        rows.append(Contender(STUDENT, student_source(student, vq, device, threads), "RSD student, 1 step"))
    return rows


def student_source(student: str, vq: Optional[Path], device: Optional[str] = None,
                   threads: Optional[int] = None) -> ModelSource:
    """ModelSource of a student checkpoint (with ``vq``), or of the embedded demo model for "default"."""
    if student == "default":
        return ModelSource(device=device, threads=threads)
    if vq is None:
        raise ConfigError(f"--student {student} needs --vq too (or pass --student default for the embedded model)")
    return ModelSource(checkpoint=Path(student), vq=vq, model=ModelKind.RSD, device=device, threads=threads)


def build_pipeline(source: ModelSource, seed: int = 0, tiling: TileConfig = TileConfig()) -> Any:
    """The SRPipeline rsd-upscale builds for ``source`` (and its model info's label)."""
    from rsd_deploy.pipeline.loading import resolve_backend
    from rsd_deploy.pipeline.sr_pipeline import SRPipeline

    backend, info = resolve_backend(source)
    return SRPipeline(backend, info, tiling, seed=seed)


def upscale_rgb8(pipeline: Any, lr: Any) -> np.ndarray:
    """(4H, 4W, 3) uint8 RGB of the decoded image ``lr``: the SR rsd-upscale writes for an 8-bit RGB file
    (``upscale_array``, then the same rounding as its canvas; as rsd-eval scores it)."""
    return metrics.to_uint8(pipeline.upscale_array(lr.rgb))


def bicubic_rgb8(lr_rgb: np.ndarray) -> np.ndarray:
    """The bicubic x4 baseline of an (H, W, 3) uint8/uint16 RGB LR: the pipeline's upsample, rounded as an SR."""
    from rsd_deploy.pipeline.image_io import bicubic_x4, to_model_range

    x = torch.from_numpy(to_model_range(lr_rgb)).permute(2, 0, 1)[None]
    return metrics.to_uint8(bicubic_x4(x)[0]).transpose(1, 2, 0)


def score(sr: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
    """The table's columns for one (H, W, 3) uint8 SR image against its ground truth."""
    ys, yg = metrics.rgb_to_y(sr), metrics.rgb_to_y(gt)
    return {"psnr_y": metrics.psnr(ys, yg), "ssim_y": metrics.ssim(ys, yg),
            "colour_error": metrics.colour_error(sr, gt), "detail_ratio": metrics.detail_ratio(sr, gt),
            "mean_gradient_y": metrics.mean_gradient(ys), "gt_mean_gradient_y": metrics.mean_gradient(yg)}


def pooled_detail_ratio(rows: Sequence[Dict[str, float]]) -> float:
    """A set's detail ratio: mean SR gradient over mean GT gradient across the images (a mean of per-image
    ratios would be dominated by nearly flat crops, whose GT gradient is close to 0)."""
    return float(np.mean([r["mean_gradient_y"] for r in rows]) / np.mean([r["gt_mean_gradient_y"] for r in rows]))


def paired_differences(per_image: Sequence[Dict[str, Dict[str, float]]], rows: Sequence[str],
                       of: str = STUDENT, key: str = PAIRED_METRIC) -> Dict[str, Dict[str, float]]:
    """``of`` minus each other row, image by image on ``key``: mean, sample std (ddof 1), the worst image's
    difference (min), wins, total."""
    out: Dict[str, Dict[str, float]] = {}
    if of not in rows:
        return out
    for other in rows:
        if other == of:
            continue
        d = np.array([img[of][key] - img[other][key] for img in per_image], np.float64)
        out[f"{of} - {other}"] = {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                                  "min": float(d.min()), "wins": int((d > 0).sum()), "total": int(len(d))}
    return out


@dataclass
class SetResult:
    """One paired set's table: per-image scores per row, their means, and the paired differences."""

    name: str
    folder: str
    rows: List[str] = field(default_factory=list)
    labels: Dict[str, str] = field(default_factory=dict)
    images: List[Dict[str, Any]] = field(default_factory=list)
    means: Dict[str, Dict[str, float]] = field(default_factory=dict)
    paired: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "folder": self.folder, "rows": self.rows, "labels": self.labels,
                "means": self.means, "paired_psnr_y": self.paired, "images": self.images}

    def summarise(self) -> None:
        """``means`` from ``images``: the mean of every score, with the set's detail ratio pooled."""
        self.means = {r: {k: float(np.mean([img[r][k] for img in self.images])) for k in self.images[0][r]}
                      for r in self.rows}
        for r in self.rows:
            self.means[r]["mean_of_image_detail_ratios"] = self.means[r]["detail_ratio"]
            self.means[r]["detail_ratio"] = pooled_detail_ratio([img[r] for img in self.images])


def named_folder_arg(usage: str) -> Callable[[str], Tuple[str, Path]]:
    """argparse ``type=`` for the result scripts' ``NAME=DIR`` arguments; a bad one is an error naming ``usage``."""
    import argparse

    def parse(text: str) -> Tuple[str, Path]:
        name, sep, folder = text.partition("=")
        if not sep or not name or not folder:
            raise argparse.ArgumentTypeError(f"{usage}; got {text!r}")
        return name, Path(folder)

    return parse


def paired_folder(folder: Path) -> Tuple[Path, Path]:
    """(lq, gt) sub-folders of a paired set folder, with a one-line error when absent."""
    lq, gt = Path(folder) / "lq", Path(folder) / "gt"
    if not lq.is_dir() or not gt.is_dir():
        raise ConfigError(f"{folder} is not a paired set: it needs lq/ and gt/ sub-folders (same file names)")
    return lq, gt


def compare_set(name: str, folder: Path, pipelines: Dict[str, Any], labels: Optional[Dict[str, str]] = None,
                limit: Optional[int] = None) -> SetResult:
    """Score bicubic and every pipeline (row name -> SRPipeline) on the pairs of ``folder`` (lq/ + gt/)."""
    from rsd_deploy.pipeline.image_io import read_image
    from rsd_deploy.train.eval_set import pair_files

    lq_dir, gt_dir = paired_folder(folder)
    pairs = pair_files(lq_dir, gt_dir)[:limit]
    result = SetResult(name, str(folder), rows=[BICUBIC, *pipelines],
                       labels={BICUBIC: "bicubic x4", **(labels or {})})
    for lr_path, gt_path in pairs:
        lr = read_image(lr_path)
        gt = read_image(gt_path).rgb  # type: ignore[arg-type]
        if gt.dtype != np.uint8 or gt.shape[:2] != (lr.height * 4, lr.width * 4):
            raise ConfigError(f"{gt_path}: the GT must be 8-bit and exactly 4x its LR ({lr.width}x{lr.height})")
        entry: Dict[str, Any] = {"image": lr_path.name}
        for row in result.rows:
            start = time.perf_counter()
            sr = bicubic_rgb8(lr.rgb) if row == BICUBIC else upscale_rgb8(pipelines[row], lr)
            entry[row] = dict(score(sr, gt), seconds=time.perf_counter() - start)
        result.images.append(entry)
        logger.info("%s %s: %s", name, lr_path.name,
                    ", ".join(f"{r} {entry[r]['psnr_y']:.2f} dB" for r in result.rows))
    result.summarise()
    result.paired = paired_differences(result.images, result.rows)
    return result


def colour_check(pipeline: Any, lr_dir: Path, limit: Optional[int] = None, threshold: float = COLOUR_LIMIT,
                 on_image: Optional[Callable[[str, float], None]] = None) -> Dict[str, Any]:
    """Colour error of each SR output of the LR images in ``lr_dir`` against its own bicubic x4 upscale."""
    from rsd_deploy.pipeline.image_io import read_image
    from rsd_deploy.train.eval_set import pair_files

    rows = []
    for path, _ in pair_files(Path(lr_dir), None)[:limit]:
        lr = read_image(path)
        err = metrics.colour_error(upscale_rgb8(pipeline, lr), bicubic_rgb8(lr.rgb))
        rows.append({"image": path.name, "colour_error": err})
        logger.info("colour check %s: %.2f levels", path.name, err)
        if on_image is not None:
            on_image(path.name, err)
    errors = np.array([r["colour_error"] for r in rows])
    worst = sorted(rows, key=lambda r: -r["colour_error"])[:5]
    return {"folder": str(lr_dir), "images": len(rows), "threshold": threshold, "max": float(errors.max()),
            "mean": float(errors.mean()), "over_threshold": int((errors > threshold).sum()),
            "worst": [{"image": r["image"], "colour_error": r["colour_error"]} for r in worst], "per_image": rows}


def _fmt(value: float, digits: int) -> str:
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


def markdown(sets: Sequence[SetResult], colour: Optional[Dict[str, Any]], command: str, notes: Sequence[str],
             title: str = TITLE) -> str:
    lines = [f"# {title}", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    for s in sets:
        n = len(s.images)
        columns = [c for c in COLUMNS if all(c[0] in s.means[r] for r in s.rows)]  # no timing for scored folders
        lines += [f"## {s.name} ({n} pairs, {s.folder})", "",
                  "| row | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---|" * len(columns)]
        for r in s.rows:
            cells = " | ".join(_fmt(s.means[r][c[0]], c[2]) for c in columns)
            lines.append(f"| {s.labels.get(r, r)} | {cells} |")
        if s.paired:
            lines += ["", "Paired Y-PSNR differences, image by image (dB):", "",
                      "| difference | mean | std | worst image | wins of the left row |", "|---|---|---|---|---|"]
            for k, d in s.paired.items():
                lines.append(f"| {k} | {d['mean']:+.2f} | {d['std']:.2f} | {d['min']:+.2f} | "
                             f"{d['wins']}/{d['total']} |")
        lines.append("")
    if colour is not None:
        worst = ", ".join(f"{w['image']} ({w['colour_error']:.2f})" for w in colour["worst"])
        lines += [f"## Colour check: {colour['model']} on {colour['folder']} ({colour['images']} images)", "",
                  "Colour error of each rsd-upscale output against its own bicubic x4 upscale (8-bit levels).", "",
                  "| max | mean | over " + f"{colour['threshold']:g}" + " | worst 5 |", "|---|---|---|---|",
                  f"| {colour['max']:.2f} | {colour['mean']:.2f} | {colour['over_threshold']}/{colour['images']} | "
                  f"{worst} |", ""]
    lines += [*[f"* {n}" for n in notes], ""]
    return "\n".join(lines)


def write_results(path: Path, sets: Sequence[SetResult], colour: Optional[Dict[str, Any]], settings: Dict[str, Any],
                  command: str, notes: Sequence[str], title: str = TITLE) -> Tuple[Path, Path]:
    """``path`` (JSON) and the same stem with ``.md``, both written atomically."""
    from rsd_deploy.train.eval_set import json_finite

    data = {"command": command, "settings": settings, "notes": list(notes), "sets": [s.to_dict() for s in sets],
            "colour_check": colour}
    path = Path(path)
    md = path.with_suffix(".md")
    atomic_write_text(path, json.dumps(json_finite(data), indent=1) + "\n")
    atomic_write_text(md, markdown(sets, colour, command, notes, title))
    return path, md


NOTES = (metrics.METRIC_NOTE,
         "colour error: mean over R, G, B of |channel mean of SR - channel mean of the reference| (8-bit levels); "
         "detail ratio: mean forward-difference gradient magnitude of Y, SR / ground truth (a set's: mean over "
         "its images of the SR's / mean of the GT's)",
         "every model row runs the rsd-upscale pipeline (tiles of 64 LR px, overlap 8, one seed for every row and "
         "image); s/image is wall time on a shared machine (indicative only)")

__all__ = ["Contender", "contenders", "student_source", "build_pipeline", "compare_set", "colour_check",
           "paired_differences", "pooled_detail_ratio", "score", "bicubic_rgb8", "upscale_rgb8", "write_results",
           "markdown", "SetResult"]
