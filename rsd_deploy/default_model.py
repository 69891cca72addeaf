"""The embedded demo model: a tiny ResShift-type UNet and VQ-f4 autoencoder shipped in the package.

It lets ``rsd-upscale`` do its job on a fresh machine with no download. It was trained by this project
(``train/scripts/rebuild_demo_model.sh``: ``rsd-train`` vq -> teacher -> rsd, see ``train/RESULTS.md``) on
the training split of the shared hr_photos images; it is a demonstration model, **not** the published RSD. Pass the official
checkpoints with ``--checkpoint`` / ``--vq`` for real quality.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

from rsd_deploy.errors import CheckpointError

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
INFO_FILE = ASSETS / "demo_model.json"
LABEL = "rsd-deploy demo model (tiny, trained on the shared images; not the published RSD)"


def default_model_info() -> Dict[str, Any]:
    """The demo model's description: kind ("rsd" or "resshift-v1"), label, schedule ("v1"), file names, ..."""
    if not INFO_FILE.is_file():
        raise CheckpointError(f"the embedded demo model is missing ({INFO_FILE} not found); reinstall rsd-deploy "
                              "or pass --checkpoint and --vq")
    info: Dict[str, Any] = json.loads(INFO_FILE.read_text())
    info.setdefault("label", LABEL)
    info.setdefault("schedule", "v1")
    return info


def load_default_models() -> Tuple[Any, Any, Dict[str, Any]]:
    """Load the embedded demo model.

    Returns ``(unet, vq, info)``: a ``UNetSwin`` (RSD student with one noise channel when
    ``info["kind"] == "rsd"``, a ResShift v1 teacher when ``"resshift-v1"``) and a ``VQAutoencoder``, both
    float32, CPU, eval mode; ``info`` is :func:`default_model_info` plus the absolute file paths.
    """
    from rsd_deploy.checkpoint import load_checkpoint

    info = default_model_info()
    unet_path, vq_path = ASSETS / info["unet"], ASSETS / info["vq"]
    for path in (unet_path, vq_path):
        if not path.is_file():
            raise CheckpointError(f"the embedded demo model file {path} is missing; reinstall rsd-deploy or pass "
                                  "--checkpoint and --vq")
    unet, vq = load_checkpoint(unet_path), load_checkpoint(vq_path)
    info = dict(info, unet_path=str(unet_path), vq_path=str(vq_path))
    logger.debug("using the embedded %s", info["label"])
    return unet, vq, info
