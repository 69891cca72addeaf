"""LPIPS (Zhang et al. 2018) with an AlexNet (default) or VGG16 backbone, weights from a local file only.

AlexNet is what the official RSD loss uses (``pyiqa.create_metric('lpips', as_loss=True)``: pyiqa's
``lpips`` is LPIPS v0.1 on AlexNet) and what the published LPIPS figures (0.193 / 0.273) measure;
VGG (``lpips.net=vgg``) is the variant SinSR/ResShift validation reports as "LPIPS-VGG".

The weights file (``.pth`` or ``.safetensors``, read with ``weights_only=True``) holds the backbone
convolutions under torchvision's ``features.<i>.weight/bias`` indices (``alexnet().features`` or
``vgg16().features``) or under the ``lpips`` package's ``net.slice<k>.<i>.*`` names, and the five
linear heads as ``lin<k>.weight`` or ``lin<k>.model.1.weight`` (the ``lpips`` package's ``alex.pth``
/ ``vgg.pth``), shape (1, C_k, 1, 1). ``train/scripts/make_lpips_weights.py`` documents how to
assemble it. Nothing is ever downloaded.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from rsd_deploy.errors import CheckpointError

logger = logging.getLogger(__name__)

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# (taps = indices in torchvision's ``features`` after which LPIPS reads activations, channels there)
BACKBONES: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    "alex": ((1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),  # relu1 .. relu5
    "vgg": ((3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
}


def _alexnet_features() -> List[nn.Module]:
    """torchvision's ``alexnet().features`` up to relu5 (same indices, so its weights load by name)."""
    return [nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()]


def _vgg16_features() -> List[nn.Module]:
    layers: List[nn.Module] = []
    cin = 3
    for item in _VGG16:
        if isinstance(item, int):
            layers += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU()]
            cin = item
        else:
            layers.append(nn.MaxPool2d(2, 2))
    return layers


class LPIPS(nn.Module):
    """``forward(a, b)``: (B, 3, H, W) images in [-1, 1] -> (B,) perceptual distances (lower = closer)."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS backbone must be one of {', '.join(BACKBONES)}, got {net!r}")
        self.net = net
        self.taps, channels = BACKBONES[net]
        layers = _alexnet_features() if net == "alex" else _vgg16_features()
        self.features = nn.Sequential(*layers[:self.taps[-1] + 1])
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
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
            if key.startswith("scaling_layer."):
                continue  # the lpips package's constants; ours are the same buffers
            key = key.replace("net.", "", 1) if key.startswith("net.") else key
            key = re.sub(r"^slice\d+\.", "features.", key)  # lpips keeps torchvision's indices inside slices
            lin = re.match(r"^lins?\.?(\d)\.(?:model\.1\.)?weight$", key)
            if lin:
                key = f"lins.{lin.group(1)}.weight"
            if key.startswith("features.") and int(key.split(".")[1]) > self.taps[-1]:
                continue
            mapped[key] = value
        expected = {k: v for k, v in self.state_dict().items() if k not in ("shift", "scale")}
        missing = sorted(set(expected) - set(mapped))
        if missing:
            raise CheckpointError(f"{source}: LPIPS-{self.net} weights lack {len(missing)} tensors (e.g. {missing[0]}); "
                                  "is it the other backbone (lpips.net)? see train/scripts/make_lpips_weights.py")
        bad = [k for k in expected if tuple(mapped[k].shape) != tuple(expected[k].shape)]
        if bad:
            raise CheckpointError(f"{source}: {bad[0]} has shape {tuple(mapped[bad[0]].shape)}, LPIPS-{self.net} needs "
                                  f"{tuple(expected[bad[0]].shape)}; set lpips.net to the file's backbone")
        self.load_state_dict({k: mapped[k].float() for k in expected}, strict=False)


def load_lpips(path: Optional[str], required: bool, net: str = "alex") -> Optional[LPIPS]:
    """LPIPS from a local weights file; None (with a warning) when absent and ``required`` is False."""
    if not path or not Path(path).is_file():
        where = f"{path} not found" if path else "lpips.weights is not set"
        if required:
            raise CheckpointError(f"LPIPS weights needed but {where}; set lpips.weights=PATH (local file, never "
                                  "downloaded) or lpips.required=false to train without the LPIPS loss")
        logger.warning("LPIPS disabled: %s (lpips.required is false, continuing without the LPIPS loss)", where)
        return None
    from rsd_deploy.checkpoint import read_checkpoint_file

    p = Path(path)
    try:
        state, _ = read_checkpoint_file(p)
    except CheckpointError as exc:
        raise CheckpointError(f"LPIPS weights {exc}; rebuild it with train/scripts/make_lpips_weights.py") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"LPIPS weights {p} is not a state dict; see train/scripts/make_lpips_weights.py")
    model = LPIPS(net)
    model.load_weights(state, str(p))
    logger.info("LPIPS(%s) weights loaded from %s", net, p)
    return model.eval()
