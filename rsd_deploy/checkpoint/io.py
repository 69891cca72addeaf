"""Reading and writing checkpoint files. The only place in the package that touches weight files."""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch

from rsd_deploy.errors import CheckpointError
from rsd_deploy.fileio import atomic_output, sha256_file  # noqa: F401 (sha256_file re-exported)

SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


_SNIFF_BYTES = 1024
_TORCH_ADVICE = re.compile(r"weights.?only|trust|unsafe|pickle", re.IGNORECASE)


def sniff(head: bytes, size: int) -> Optional[str]:
    """What a file that is not a checkpoint most likely is, from its first bytes: "<what it is>; <what to do>".

    None for the formats a checkpoint can have (zip archive, legacy pickle, safetensors header)."""
    if size == 0:
        return "the file is empty (0 bytes); download or copy it again"
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer, not the weights: run `git lfs pull` in its repository (or download the file itself)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        return "an HTML page, not weights: the download failed? (a login, error or redirect page); download it again"
    images = {b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
              b"BM": "a BMP image", b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image"}
    for magic, what in images.items():
        if head.startswith(magic):
            return f"{what}, not a checkpoint; pass the weights file (.pth, .ckpt or .safetensors)"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image, not a checkpoint; pass the weights file (.pth, .ckpt or .safetensors)"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive (.tar.gz?), not a checkpoint; unpack it and pass the .pth inside"
    if head.startswith((b"7z\xbc\xaf", b"Rar!", b"\xfd7zXZ")):
        return "a compressed archive, not a checkpoint; unpack it and pass the .pth inside"
    if text.startswith((b"{", b"[")) and not _safetensors_header(head):
        return "a JSON/text file, not a checkpoint; pass the weights file"
    if head.startswith((b"PK\x03\x04", b"\x80")) or _safetensors_header(head):
        return None  # torch's zip format, a legacy pickle, or safetensors: let the readers decide
    try:
        head.decode("utf-8")
        return "a text file, not a checkpoint; pass the weights file (.pth, .ckpt or .safetensors)"
    except UnicodeDecodeError:
        pass
    return ("not a checkpoint (unrecognised bytes: not a PyTorch zip archive, pickle or safetensors file); "
            "the file is damaged or not weights: download it again")


def _safetensors_header(head: bytes) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON object."""
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < (1 << 28) and head[8:9] == b"{"


def _read_safetensors(p: Path) -> Tuple[object, Dict[str, str]]:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(p), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(p)), metadata
    except Exception as e:  # safetensors raises several types for corrupt headers
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{p}: not a readable safetensors file ({type(e).__name__}: {detail}); "
                              f"the file is damaged or truncated: download it again") from None


def read_checkpoint_file(path: os.PathLike) -> Tuple[object, Dict[str, str]]:
    """Load a file as data only: ``torch.load(weights_only=True)`` or safetensors. Returns (object, metadata).

    A file that is not a checkpoint (HTML page, Git LFS pointer, image, random bytes, truncated archive) is
    named as such, never with torch's advice to retry with ``weights_only=False``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file; check the path")
    try:
        with open(p, "rb") as f:
            head = f.read(_SNIFF_BYTES)
        size = p.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read ({e.strerror or e}); check the file permissions") from None
    problem = sniff(head, size)
    if problem is not None:
        raise CheckpointError(f"{p}: {problem}")
    if p.suffix.lower() == ".safetensors" or _safetensors_header(head):
        return _read_safetensors(p)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 255" on random bytes: our line says more
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True), {}
    except Exception as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(f"{p}: holds pickled code, not only tensors; it was refused (weights_only=True). "
                                  "Re-save it as a plain state dict or safetensors") from None
        if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(p):
            raise CheckpointError(f"{p}: a truncated or damaged zip archive (the download was cut short?); "
                                  f"download it again") from None
        # torch's own text advises weights_only=False (the one thing not to do with an unknown file): drop it
        first = next((line for line in str(e).splitlines()
                      if line.strip() and not _TORCH_ADVICE.search(line)), type(e).__name__)
        raise CheckpointError(f"{p}: cannot be read as a PyTorch checkpoint ({first.strip()}); the file is damaged "
                              f"or not weights: download it again") from None


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: os.PathLike,
                      metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write tensors atomically (temp file in the same folder, then rename)."""
    from safetensors.torch import save_file

    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


def metadata_json(metadata: Mapping[str, str], key: str) -> Optional[dict]:
    raw = metadata.get(key)
    return json.loads(raw) if raw else None
