"""Image files <-> arrays for the SR pipeline (OpenCV), padding, and atomic output writes.

Reading keeps what the file has: 8 or 16 bits, grey, RGB or RGBA (``cv2.IMREAD_UNCHANGED``),
then applies the EXIF orientation itself (IMREAD_UNCHANGED ignores it; OpenCV's TIFF reader
already applies the TIFF orientation tag and reports no EXIF block, so nothing is applied twice).
The network always sees RGB in [-1, 1]; grey images run as three stacked channels and are
written back grey (grey+alpha stays grey+alpha); alpha is upscaled with a plain bicubic resize and re-attached.

Before decoding, the size is read from the header (Pillow, no pixel decoding) and an image whose output
would exceed ``max_output_megapixels`` (or this machine's memory) is refused with one line. Decoder
chatter (OpenCV's log, libpng's warnings on stderr) goes to the debug log, not the terminal.
"""
from __future__ import annotations

import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from rsd_deploy import pixels
from rsd_deploy.errors import ImageIOError, NonFiniteOutputError
from rsd_deploy.pipeline.image_header import (DEFAULT_MAX_OUTPUT_MEGAPIXELS, check_output_size, encode_png_grey_alpha,
                                              native_stderr_to_debug_log, png_is_grey_alpha, read_file_bytes,
                                              read_header)
from rsd_deploy.pixels import to_model_range  # noqa: F401 - the pipeline's name for it

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_MAX_VALUE = {np.dtype(np.uint8): pixels.max_value(np.uint8), np.dtype(np.uint16): pixels.max_value(np.uint16)}
_EXIF_ORIENTATION_TAG = 0x0112
# ITU-R BT.601 luma, the weights cv2.cvtColor(RGB2GRAY) uses
_LUMA_RGB = np.array([0.299, 0.587, 0.114], np.float32)
@dataclass
class LRImage:
    """A decoded input image, display-oriented.

    ``rgb``: (H, W, 3) uint8 or uint16, RGB order (grey inputs stacked to 3 channels).
    ``alpha``: (H, W) same dtype, or None. ``grayscale``: the file was grey (grey or grey+alpha).
    """

    path: Path
    rgb: np.ndarray
    alpha: Optional[np.ndarray]
    grayscale: bool

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.rgb.dtype

    @property
    def max_value(self) -> int:
        return _MAX_VALUE[self.rgb.dtype]


def exif_orientation(blob: bytes) -> int:
    """The EXIF orientation (1..8) stored in an EXIF block (TIFF structure), 1 if absent or unreadable."""
    if blob.startswith(b"Exif\x00\x00"):
        blob = blob[6:]
    if len(blob) < 8 or blob[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if blob[:2] == b"II" else ">"
    try:
        (ifd_offset,) = struct.unpack_from(order + "I", blob, 4)
        (count,) = struct.unpack_from(order + "H", blob, ifd_offset)
        for i in range(count):
            tag, typ, _n = struct.unpack_from(order + "HHI", blob, ifd_offset + 2 + 12 * i)
            if tag == _EXIF_ORIENTATION_TAG and typ == 3:  # SHORT
                (value,) = struct.unpack_from(order + "H", blob, ifd_offset + 2 + 12 * i + 8)
                return int(value) if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored (H, W[, C]) image into display orientation for EXIF ``orientation`` 1..8."""
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return image.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(image, k=-1)  # 90 degrees clockwise
    if orientation == 7:
        return image[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(image, k=1)
    return image


def _decode_oriented(data: np.ndarray, path: Path) -> Tuple[Optional[np.ndarray], int]:
    """Decode with IMREAD_UNCHANGED -> (image or None, EXIF orientation still to apply)."""
    decode_with_metadata = getattr(cv2, "imdecodeWithMetadata", None)
    if decode_with_metadata is not None:
        image, types, blocks = decode_with_metadata(data, cv2.IMREAD_UNCHANGED)
        orientation = 1
        for kind, block in zip(np.asarray(types).ravel().tolist(), blocks):
            if kind == cv2.IMAGE_METADATA_EXIF:
                orientation = exif_orientation(np.asarray(block, np.uint8).tobytes())
        return image, orientation
    # OpenCV without the metadata API: ANYCOLOR|ANYDEPTH applies EXIF itself but drops alpha
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is not None and image.ndim == 3 and image.shape[2] == 4:
        logger.warning("%s: this OpenCV cannot read EXIF with alpha; orientation not applied", path)
        return image, 1
    return cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH), 1


def read_image(path: Path | str, scale: int = 4,
               max_output_megapixels: Optional[float] = DEFAULT_MAX_OUTPUT_MEGAPIXELS) -> LRImage:
    """Decode an image file (PNG, JPEG, WebP, TIFF, BMP; 8/16-bit; grey, grey+alpha, RGB, RGBA).

    Raises ImageIOError with a one-line message naming the file for missing, empty, corrupt, zero-size,
    unsupported or too large images (the x``scale`` output above ``max_output_megapixels``, checked from
    the header before decoding; None = no limit but this machine's memory).
    """
    path = Path(path)
    data = read_file_bytes(path)
    if len(data) == 0:
        raise ImageIOError(f"{path}: file is empty (0 bytes); replace it with a valid image")
    header = read_header(data)
    if header is not None:
        check_output_size(path, header, scale, max_output_megapixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        with native_stderr_to_debug_log(path):
            image, orientation = _decode_oriented(buffer, path)
    except cv2.error as e:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):
            raise ImageIOError(f"{path}: larger than OpenCV's decoder limit (CV_IO_MAX_IMAGE_PIXELS, 2^30 pixels); "
                               f"crop or downscale the input") from None
        raise ImageIOError(f"{path}: cannot decode image ({_first_line(e)}); use a valid PNG, JPEG, WebP, TIFF "
                           f"or BMP file") from None
    if image is None or image.size == 0:
        raise ImageIOError(f"{path}: cannot decode image (corrupt, truncated or unsupported format); "
                           f"use a valid PNG, JPEG, WebP, TIFF or BMP file")
    if image.dtype not in _MAX_VALUE:
        raise ImageIOError(f"{path}: unsupported pixel type {image.dtype}; convert it to 8- or 16-bit integers")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise ImageIOError(f"{path}: unsupported channel count {image.shape[2]}; use grey, RGB or RGBA")
    image = apply_orientation(image, orientation)
    if orientation != 1:
        logger.debug("%s: applied EXIF orientation %d", path, orientation)

    alpha = None
    grey_alpha = image.ndim == 3 and image.shape[2] == 4 and (
        png_is_grey_alpha(data) or (header is not None and header.channels == 2))
    if image.ndim == 2:
        rgb = np.repeat(image[:, :, None], 3, axis=2)
    elif grey_alpha:  # decoded as BGRA with B = G = R: keep it grey + alpha
        rgb = np.repeat(image[:, :, :1], 3, axis=2)
        alpha = np.ascontiguousarray(image[:, :, 3])
    else:
        rgb = np.ascontiguousarray(image[:, :, 2::-1])  # BGR(A) -> RGB
        if image.shape[2] == 4:
            alpha = np.ascontiguousarray(image[:, :, 3])
    return LRImage(path=path, rgb=rgb, alpha=alpha, grayscale=image.ndim == 2 or grey_alpha)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, h, w) at the bottom and right to multiples of ``multiple`` by the one rule,
    ``rsd_deploy.pixels.pad_to_multiple`` (reflect per axis where pad < side, else replicate); the
    result is on ``x``'s device (LR images are small: the padding itself runs on the host)."""
    h, w = x.shape[-2:]
    if not ((-h) % multiple or (-w) % multiple):
        return x
    padded = pixels.pad_to_multiple(x.detach().cpu().numpy(), multiple)
    return torch.from_numpy(np.ascontiguousarray(padded)).to(x.device)


def bicubic_x4(lq: torch.Tensor) -> torch.Tensor:
    """The conditioning upsample of the LR (B, 3, h, w) -> (B, 3, 4h, 4w): PyTorch bicubic, a = -0.75,
    align_corners False, no antialias, no clamp (as upstream). Runs on the tensor's device."""
    return F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False, antialias=False)


class SRCanvas:
    """The output image in file layout (grey, BGR or BGRA; uint8 or uint16), filled row band by
    row band from the pipeline's blended float RGB rows (``write_rows`` is a tiling.RowSink)."""

    def __init__(self, lr: LRImage, scale: int):
        self.path = lr.path
        self.scale = scale
        self.grayscale = lr.grayscale
        self.dtype = lr.dtype
        self.max_value = lr.max_value
        h, w = lr.height * scale, lr.width * scale
        channels = (1 if lr.grayscale else 3) + (1 if lr.alpha is not None else 0)  # grey+alpha: 2
        shape = (h, w) if channels == 1 else (h, w, channels)
        self.pixels = np.empty(shape, dtype=lr.dtype)
        if lr.alpha is not None:
            self.pixels[:, :, -1] = upscale_alpha(lr.alpha, scale)

    def write_rows(self, y0: int, rows_rgb: np.ndarray) -> None:
        """Store SR rows: float32 (n, W, 3) RGB in about [-1, 1] -> clamp -> round (pixels.quantize) -> file layout.

        NaN/Inf rows raise NonFiniteOutputError: clamping would turn them into a silently black image."""
        finite = np.isfinite(rows_rgb)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise NonFiniteOutputError(
                f"{self.path}: the network produced NaN/Inf ({bad} of {finite.size} values in output rows "
                f"{y0}-{y0 + rows_rgb.shape[0] - 1}); with --precision fp16 that is an fp16 overflow: use --precision "
                f"fp32 or bf16; otherwise the weights overflow: use another checkpoint")
        rows = np.clip(rows_rgb, -1.0, 1.0, out=rows_rgb)  # in place: the rows are ours (see RowSink)
        if self.grayscale:
            rows = rows @ _LUMA_RGB  # luma of model-range RGB: the weights sum to 1
        values = pixels.quantize(rows, self.max_value, self.dtype, inplace=True)  # as metrics.to_uint8
        n = values.shape[0]
        if self.pixels.ndim == 2:
            self.pixels[y0:y0 + n] = values
        elif self.grayscale:  # grey + alpha
            self.pixels[y0:y0 + n, :, 0] = values
        else:
            self.pixels[y0:y0 + n, :, 2::-1] = values  # RGB -> BGR


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) alpha -> (scale*H, scale*W), bicubic resize clipped to the dtype's range."""
    h, w = alpha.shape
    up = cv2.resize(alpha.astype(np.float32), (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(up), 0, _MAX_VALUE[alpha.dtype]).astype(alpha.dtype)


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_image_atomic(path: Path | str, pixels: np.ndarray) -> None:
    """Encode ``pixels`` (OpenCV layout) by the file extension and write it atomically: a temp file
    in the same folder, fsync, then os.replace. On any failure the temp file is removed and an
    existing file at ``path`` is left as it was."""
    path = Path(path)
    if pixels.ndim == 3 and pixels.shape[2] == 2:  # grey + alpha: OpenCV writes 1, 3 or 4 channels only
        if (path.suffix or ".png").lower() != ".png":
            raise ImageIOError(f"{path}: grey+alpha images are written as PNG only; use a .png output name")
        buf = np.frombuffer(encode_png_grey_alpha(pixels), np.uint8)
    else:
        with native_stderr_to_debug_log(path):
            ok, buf = cv2.imencode(path.suffix or ".png", pixels)
        if not ok:
            raise ImageIOError(f"{path}: cannot encode a {pixels.dtype} image as {path.suffix}; write PNG instead")
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp_name, _new_file_mode())  # mkstemp creates 0600; give outputs the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        raise ImageIOError(f"{path}: cannot write output ({e.strerror or e}); "
                           f"check that the output folder exists and is writable") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def read_rgb_float(path: Path | str) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] for training and calibration data: 8- or 16-bit, grey stacked to
    three channels, alpha dropped (no EXIF handling: datasets are stored upright)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageIOError(f"cannot read image {path}; remove or replace the file")
    peak = 65535.0 if img.dtype == np.uint16 else 255.0
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img.astype(np.float32) / peak


def image_files(folder: os.PathLike, recursive: bool = False) -> List[Path]:
    """The image files in ``folder`` (by extension, hidden files skipped), sorted.

    ``recursive=True`` also walks sub-folders (an ImageNet train tree: one folder per class,
    ``**/*.JPEG``); hidden sub-folders are skipped. Callers decide what an empty or missing folder
    means for them (their own one-line error)."""
    root = Path(folder)
    if not recursive:
        return sorted(c for c in root.iterdir()
                      if c.is_file() and not c.name.startswith(".") and c.suffix.lower() in SUPPORTED_EXTENSIONS)
    found: List[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in SUPPORTED_EXTENSIONS)
    return sorted(found)
