"""Building blocks of ResShift's Swin-UNet: fp32-statistics GroupNorm, timestep embedding, ResBlock, resampling."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def is_exporting() -> bool:
    """True while torch.jit tracing, torch.export/dynamo or ONNX export is running (no Python caches then)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        for name in ("is_exporting", "is_compiling", "is_dynamo_compiling"):
            fn = getattr(compiler, name, None)
            if fn is not None and fn():
                return True
    return bool(torch.onnx.is_in_onnx_export())


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are computed in fp32 (input upcast, result cast back), as ResShift does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float() if self.weight is not None else None,
                            self.bias.float() if self.bias is not None else None, self.eps).to(x.dtype)


#: GroupNorm groups of the official networks (``Normalize`` / ``normalization`` upstream)
NORM_GROUPS = 32


def normalization(channels: int, eps: float = 1e-5, groups: int = NORM_GROUPS) -> GroupNorm32:
    return GroupNorm32(groups, channels, eps=eps)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the raw step index: [cos(t f_k), sin(t f_k)], f_k = exp(-ln(max_period) k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """GN-SiLU-conv, timestep scale/shift on the second norm, GN-SiLU-dropout-conv, identity or 1x1 skip.

    Submodule names follow the official checkpoint keys (in_layers / emb_layers / out_layers / skip_connection).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: Optional[int] = None, dropout: float = 0.0,
                 groups: int = NORM_GROUPS):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(normalization(channels, groups=groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels, groups=groups), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection: nn.Module = (nn.Identity() if out_channels == channels
                                           else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        scale, shift = emb_out.chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        for layer in self.out_layers[1:]:
            h = layer(h)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Strided 3x3 conv (key ``op``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
