"""Reading and writing checkpoint files. The only place in the package that touches weight files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch

from rsd_deploy.errors import CheckpointError
from rsd_deploy.fileio import atomic_output, sha256_file  # noqa: F401 (sha256_file re-exported)

SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def read_checkpoint_file(path: os.PathLike) -> Tuple[object, Dict[str, str]]:
    """Load a file as data only: ``torch.load(weights_only=True)`` or safetensors. Returns (object, metadata)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file; check the path")
    if p.suffix == ".safetensors":
        try:
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(p), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            return load_file(str(p)), metadata
        except Exception as e:  # safetensors raises several types for corrupt headers
            raise CheckpointError(f"{p}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=True), {}
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(f"{p}: holds pickled code, not only tensors; it was refused (weights_only=True). "
                                  "Re-save it as a plain state dict or safetensors") from None
        raise CheckpointError(f"{p}: cannot be read as a PyTorch checkpoint ({first})") from None


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
