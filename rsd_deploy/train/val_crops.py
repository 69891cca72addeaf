"""A fixed validation set cut from HR photos: seeded HR crops and their plain bicubic x4 LR, as a paired
folder (``lq/`` + ``gt/``, same file names) that the paired evaluations read (``train.evaluate``,
``train.eval_set``, ``train.compare``).

* Crops are native-resolution ``size`` x ``size`` squares of the HR image (no resampling of the
  ground truth), or of the image area-downscaled by ``downscale`` (a harder set: native wallpaper crops are
  nearly flat). ``per_image`` crops are spread over the image: it is cut into a grid of
  ``floor(sqrt(n))`` rows by ``ceil(n / rows)`` columns and each crop lies at a seeded random place inside
  its own cell (clamped to the image when a cell is smaller than the crop). The generator is seeded by
  (seed, CRC-32 of the file name), so adding or removing a photo never moves another photo's crops.
* The LR is the training data's plain-bicubic rule, ``degradation.bicubic_downsample``: PyTorch's
  antialiased bicubic (``F.interpolate(mode="bicubic", antialias=True)``; with antialias PyTorch uses
  a = -0.5 and widens the kernel by the scale: PIL's ``Image.BICUBIC`` within 1 level, MATLAB ``imresize``
  but for the border rule), rounded to 8 bits.
  imagenet_val_sr's LR is not a plain downsampling of its GT (Real-ESRGAN-style blur, noise and JPEG: no
  plain rule comes within ~7.5 levels of it), so this follows the usual bicubic-benchmark convention.
* Every file is written atomically, and ``crops.json`` records the rule, the seed and each crop's box.
"""
from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rsd_deploy.errors import ConfigError
from rsd_deploy.fileio import atomic_write_text

logger = logging.getLogger(__name__)

MANIFEST = "crops.json"
LR_RULE = ("rsd_deploy.train.degradation.bicubic_downsample: torch F.interpolate(mode='bicubic', antialias=True, "
           "align_corners=False) to 1/scale, rounded to 8 bits")


def lr_of(gt: np.ndarray, scale: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 HR crop -> its uint8 LR by the one plain-bicubic rule (degradation.bicubic_downsample)."""
    from rsd_deploy.train.degradation import bicubic_downsample

    lr = bicubic_downsample(gt.astype(np.float32) / np.float32(255.0), scale)
    return np.rint(lr * np.float32(255.0)).astype(np.uint8)


def grid_shape(count: int) -> Tuple[int, int]:
    """(rows, columns) of the cells ``count`` crops are spread over: 4 -> 2 x 2, 6 -> 2 x 3, 3 -> 1 x 3."""
    rows = max(1, math.isqrt(count))
    return rows, -(-count // rows)


def crop_boxes(height: int, width: int, size: int, count: int, rng: np.random.Generator) -> List[Tuple[int, int]]:
    """``count`` top-left corners (y, x) of ``size`` x ``size`` crops of an image, one per grid cell."""
    if height < size or width < size:
        raise ConfigError(f"an image of {width}x{height} px is smaller than the {size} px crop; lower the crop size")
    rows, cols = grid_shape(count)

    def corner(cell: int, cells: int, side: int) -> int:
        # inside the cell [lo, hi), clamped so that the crop stays inside the image
        lo, hi = cell * side // cells, (cell + 1) * side // cells
        first = min(lo, side - size)
        return int(rng.integers(first, max(first, min(hi - size, side - size)) + 1))

    boxes = []
    for k in range(count):
        r, c = divmod(k, cols)
        y = corner(r, rows, height)
        boxes.append((y, corner(c, cols, width)))
    return boxes


@dataclass(frozen=True)
class CropSetConfig:
    hr_dir: Path
    output_dir: Path  # gets lq/, gt/ and crops.json
    names: Optional[Sequence[str]] = None  # file names inside hr_dir; None: every image there
    size: int = 256  # HR crop side
    per_image: int = 4
    scale: int = 4
    seed: int = 0
    # > 1: area-downscale each photo by this factor first, so that crops hold as much detail per pixel as the
    # training crops do at their strongest zoom (data.zoom_range); native wallpaper crops are nearly flat
    downscale: float = 1.0


def make_crop_set(config: CropSetConfig) -> Dict[str, Any]:
    """Write the paired crop folder; returns the manifest (also written as ``crops.json``)."""
    from rsd_deploy.pipeline.image_io import read_image, write_image_atomic
    from rsd_deploy.train.data import list_images, select_files

    hr_dir, out = Path(config.hr_dir), Path(config.output_dir)
    if config.size % config.scale or config.size <= 0 or config.per_image <= 0 or config.downscale < 1:
        raise ConfigError(f"crop size {config.size} must be a positive multiple of the scale {config.scale}, "
                          f"crops per image ({config.per_image}) positive and the downscale ({config.downscale}) "
                          ">= 1")
    if not hr_dir.is_dir():
        raise ConfigError(f"HR folder {hr_dir} does not exist; pass the folder of HR photos")
    if out.resolve() == hr_dir.resolve() or hr_dir.resolve() in out.resolve().parents:
        raise ConfigError(f"output folder {out} is inside the HR folder {hr_dir}; write the crops elsewhere")
    files = list_images([hr_dir])
    if config.names is not None:
        files = select_files(files, config.names)
    for sub in ("lq", "gt"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    crops = []
    for path in files:
        rgb = read_image(path, max_output_megapixels=None).rgb
        if rgb.dtype != np.uint8:
            rgb = np.round(rgb.astype(np.float64) / 257.0).astype(np.uint8)
        if config.downscale > 1:
            import cv2

            size = (int(rgb.shape[1] / config.downscale), int(rgb.shape[0] / config.downscale))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        rng = np.random.default_rng([config.seed, zlib.crc32(path.name.encode("utf-8"))])
        for k, (y, x) in enumerate(crop_boxes(rgb.shape[0], rgb.shape[1], config.size, config.per_image, rng)):
            gt = np.ascontiguousarray(rgb[y:y + config.size, x:x + config.size])
            lq = lr_of(gt, config.scale)
            name = f"{path.stem}_c{k}.png"
            write_image_atomic(out / "gt" / name, gt[..., ::-1])  # OpenCV's BGR order
            write_image_atomic(out / "lq" / name, lq[..., ::-1])
            crops.append({"file": name, "source": path.name, "y": y, "x": x})
        logger.info("%s: %d crops", path.name, config.per_image)
    manifest = {"hr_dir": str(hr_dir), "size": config.size, "per_image": config.per_image, "scale": config.scale,
                "seed": config.seed, "downscale": config.downscale, "lr_rule": LR_RULE, "crops": crops}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


__all__ = ["CropSetConfig", "make_crop_set", "lr_of", "crop_boxes", "grid_shape"]
