"""What an image file is before it is decoded, and keeping decoders quiet.

* ``read_header``: size, channels and depth from the header (Pillow's lazy open, no pixel decoding), so
  ``check_output_size`` can refuse an image whose output cannot fit before gigabytes are decoded;
* ``read_file_bytes``: the whole file, also from pipes (``<(cat a.png)``, /dev/fd/N cannot seek), with one-line
  errors that say what is wrong (dangling symlink, permissions, a pipe);
* ``native_stderr_to_debug_log``: libpng's warnings go straight to file descriptor 2; they become debug log
  lines (OpenCV's own log is silenced by ``silence_opencv_logging``);
* ``encode_png_grey_alpha``: OpenCV writes 1, 3 or 4 channels only; grey+alpha stays 2-channel.
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from rsd_deploy.errors import ImageIOError

logger = logging.getLogger(__name__)

#: default refusal limit for one output image (``--max-output-megapixels``): 1024 MP is an 8192 x 8192 LR
#: input, a 3 GB 8-bit RGB output; above it, the uint8 output alone outgrows typical machines
DEFAULT_MAX_OUTPUT_MEGAPIXELS = 1024.0


def silence_opencv_logging() -> None:
    """OpenCV logs decoder warnings ("[ WARN:0@...] PNG input buffer is incomplete") to stderr; our
    one-line errors replace them. (OpenCV 5 has the setter only under cv2.utils.logging.)"""
    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is not None and hasattr(logging_mod, "setLogLevel"):
        logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    elif hasattr(cv2, "setLogLevel"):  # OpenCV 4
        cv2.setLogLevel(0)


silence_opencv_logging()


@contextlib.contextmanager
def native_stderr_to_debug_log(what: object) -> Iterator[None]:
    """Capture what C libraries write to file descriptor 2 (libpng prints "libpng warning: iCCP: ..."
    straight to stderr) and log it at debug level instead. Main thread only; elsewhere a no-op."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreter)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                logger.debug("%s: decoder said: %s", what, " | ".join(text.splitlines()))


@dataclass(frozen=True)
class HeaderInfo:
    """What an image file's header says, read without decoding the pixels."""

    width: int
    height: int
    channels: int  # as decoded for us: 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha
    bits: int  # 8 or 16


def read_header(data: bytes) -> Optional[HeaderInfo]:
    """Size, channels and depth from the header (Pillow's lazy open reads no pixel data); None when Pillow
    does not know the format (OpenCV may still decode it)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit; Pillow's bomb check would hide the size
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            mode, bands = im.mode, len(im.getbands())
            info = dict(im.info)
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse: let OpenCV try
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    if mode in ("LA", "La", "PA"):
        channels = 2 if mode != "PA" else 4
    elif mode == "P":
        channels = 4 if "transparency" in info else 3
    elif mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        channels = 1
    else:
        channels = min(max(bands, 1), 4)
    bits = 16 if mode.startswith("I;16") or mode in ("I", "RGB;16", "RGBA;16") or _png_bit_depth(data) == 16 else 8
    return HeaderInfo(int(width), int(height), channels, bits)


def _png_bit_depth(data: bytes) -> Optional[int]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        return int(data[24])
    return None


def png_is_grey_alpha(data: bytes) -> bool:
    """PNG colour type 4 (grey + alpha); OpenCV decodes it as 4-channel BGRA with B = G = R."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR" and data[25] == 4


def _physical_memory() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_output_size(path: Path, header: HeaderInfo, scale: int, max_output_megapixels: Optional[float]) -> None:
    """Refuse, before decoding, an image whose x``scale`` output exceeds the limit or the machine's memory."""
    out_w, out_h = header.width * scale, header.height * scale
    megapixels = out_w * out_h / 1e6
    out_bytes = out_w * out_h * header.channels * header.bits // 8
    def mp(x: float) -> str:
        return f"{x:,.0f}" if x >= 10 else f"{x:.3g}"

    if max_output_megapixels is not None and megapixels > max_output_megapixels:
        raise ImageIOError(
            f"{path}: {header.width}x{header.height} px gives a {out_w}x{out_h} output ({mp(megapixels)} megapixels, "
            f"{out_bytes / 1e9:.1f} GB as {header.channels}-channel {header.bits}-bit), above the limit of "
            f"{mp(max_output_megapixels)} "
            f"megapixels; crop or downscale the input, or raise --max-output-megapixels if the machine has the memory")
    ram = _physical_memory()
    if ram is not None and out_bytes > ram:
        raise ImageIOError(
            f"{path}: the {out_w}x{out_h} output alone needs {out_bytes / 1e9:.1f} GB but this machine has "
            f"{ram / 1e9:.1f} GB of memory; crop or downscale the input")


def read_file_bytes(path: Path) -> bytes:
    """The whole file (works for pipes and process substitution, /dev/fd/N, which cannot seek)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageIOError(f"{path}: a dangling symlink (its target {os.readlink(path)} is missing); "
                               f"fix or remove the link") from None
        raise ImageIOError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise ImageIOError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ImageIOError(f"{path}: permission denied; check the file permissions (chmod +r)") from None
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ESPIPE, errno.EBADF) or path.is_fifo():
            raise ImageIOError(f"{path}: a pipe that cannot be read ({e.strerror or e}); pass a regular file, or "
                               f"keep the writer of the pipe running while rsd-upscale reads it") from None
        raise ImageIOError(f"{path}: cannot read ({e.strerror or e})") from None


def encode_png_grey_alpha(pixels: np.ndarray) -> bytes:
    """(H, W, 2) uint8/uint16 grey + alpha -> PNG bytes (colour type 4; rows unfiltered, zlib level 6)."""
    h, w, _ = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    raw = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((h, 1), np.uint8), raw], axis=1)  # filter type 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))
