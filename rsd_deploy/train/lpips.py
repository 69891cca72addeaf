"""LPIPS (VGG16 variant, Zhang et al. 2018) with weights from a local file only (no hub download).

The weights file (``.pth`` or ``.safetensors``, read with ``weights_only=True``) holds the VGG16
convolution weights under ``features.<i>.weight/bias`` (torchvision's ``vgg16().features`` indices)
and the five linear heads as ``lin<k>.weight`` or ``lin<k>.model.1.weight`` (the ``lpips`` package's
``vgg.pth`` naming), shape (1, C_k, 1, 1). ``train/scripts/make_lpips_weights.py`` documents how to
assemble it from those two public sources.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from rsd_deploy.errors import CheckpointError

logger = logging.getLogger(__name__)

_VGG16: List[Union[int, str]] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # indices (in torchvision's features) of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """``forward(a, b)``: (B, 3, H, W) images in [-1, 1] -> (B,) perceptual distances (lower = closer)."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        cin = 3
        for item in _VGG16:
            if isinstance(item, int):
                layers += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU(inplace=False)]
                cin = item
            else:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers[:_TAPS[-1] + 1])
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], device=a.device, dtype=torch.float32)
        for fa, fb, lin in zip(self._taps(a.float()), self._taps(b.float()), self.lins):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((na - nb).pow(2)).mean((1, 2, 3))
        return total

    def load_weights(self, state: Dict[str, torch.Tensor], source: str = "state dict") -> None:
        mapped: Dict[str, torch.Tensor] = {}
        for key, value in state.items():
            key = key.replace("net.", "", 1) if key.startswith("net.") else key
            if key.startswith("lin") and ".model.1." in key:
                key = f"lins.{key[3]}.weight"
            elif key.startswith("lin") and key[3].isdigit():
                key = f"lins.{key[3]}.weight"
            if key.startswith("features.") and int(key.split(".")[1]) > _TAPS[-1]:
                continue
            mapped[key] = value
        expected = {k for k in self.state_dict() if k not in ("shift", "scale")}
        missing = sorted(expected - set(mapped))
        if missing:
            raise CheckpointError(f"{source}: LPIPS weights lack {len(missing)} tensors (e.g. {missing[0]}); see "
                                  "train/scripts/make_lpips_weights.py")
        self.load_state_dict({k: v for k, v in mapped.items() if k in expected}, strict=False)


def load_lpips(path: Optional[str], required: bool) -> Optional[LPIPS]:
    """LPIPS from a local weights file; None (with a warning) when absent and ``required`` is False."""
    if not path or not Path(path).is_file():
        where = f"{path} not found" if path else "lpips.weights is not set"
        if required:
            raise CheckpointError(f"LPIPS weights needed but {where}; set lpips.weights=PATH (local file, never "
                                  "downloaded) or lpips.required=false to train without the LPIPS loss")
        logger.warning("LPIPS disabled: %s (lpips.required is false, continuing without the LPIPS loss)", where)
        return None
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    model = LPIPS()
    model.load_weights(state, str(p))
    logger.info("LPIPS(VGG) weights loaded from %s", p)
    return model.eval()
