"""The VQ-f4 autoencoder of ResShift (``VQModelTorch``), written from MODEL_SPEC.md section 4.

``encode`` returns the continuous latent (no quantisation); ``decode`` quantises first (nearest code by
squared L2 computed in fp32) and then decodes. Global attention uses ``scaled_dot_product_attention``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rsd_deploy.config import VQConfig
from rsd_deploy.models.layers import NORM_GROUPS, GroupNorm32

_EPS = 1e-6


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return GroupNorm32(groups, channels, eps=_EPS)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int = NORM_GROUPS):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head global self-attention over all positions (1x1 conv q, k, v, proj_out)."""

    def __init__(self, channels: int, groups: int = NORM_GROUPS):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale c^-0.5 (the default)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class _Down(nn.Module):
    """Zero-pad (0, 1, 0, 1) then 3x3 stride-2 conv without padding (asymmetric, as upstream)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Up(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.block = blocks


class Encoder(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = c.ch
        for i, mult in enumerate(c.ch_mult):
            cout = c.ch * mult
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(cin, cout, c.norm_groups))
                cin = cout
            level = _Level(blocks)
            if i != len(c.ch_mult) - 1:
                level.downsample = _Down(cin)
            self.down.append(level)
        self.mid = _Mid(cin, c.norm_groups)
        self.norm_out = _norm(cin, c.norm_groups)
        self.conv_out = nn.Conv2d(cin, c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        cin = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin, c.norm_groups)
        levels = []
        for i in reversed(range(len(c.ch_mult))):
            cout = c.ch * c.ch_mult[i]
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, cout, c.norm_groups))
                cin = cout
            level = _Level(blocks)
            if i != 0:
                level.upsample = _Up(cin)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # up[0] is the full-resolution level, as in the checkpoints
        self.norm_out = _norm(cin, c.norm_groups)
        self.conv_out = nn.Conv2d(cin, c.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-code lookup (key ``embedding``). Distances |z|^2 + |e|^2 - 2 z.e always in fp32."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """z (B, D, h, w) -> (z_q (B, D, h, w) in z's dtype, indices (B, h, w) int64)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        codes = self.embedding.weight.float()
        # autocast would run the matmul in fp16/bf16 and flip near-tie argmins: keep it fp32
        with torch.autocast(device_type=z.device.type, enabled=False):
            dist = (flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1)) - 2.0 * (flat @ codes.t())
        indices = dist.argmin(dim=1)
        z_q = codes[indices].reshape(b, h, w, d).permute(0, 3, 1, 2)
        # upstream returns the straight-through form z + (z_q - z); its rounding differs from z_q by ~1 ulp,
        # which the decoder amplifies to ~1e-5, so keep the same arithmetic for parity
        z32 = z.float()
        z_q = z32 + (z_q - z32)
        return z_q.to(z.dtype), indices.reshape(b, h, w)


class VQAutoencoder(nn.Module):
    """VQ-f4 autoencoder. Images (B, 3, H, W) in [-1, 1], H and W multiples of 4; latents (B, 3, H/4, W/4)."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.decoder = Decoder(config)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> continuous latent (B, embed_dim, H/f, W/f); no quantisation."""
        return self.quant_conv(self.encoder(image))

    def quantize_latent(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.quantize(z)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """(B, embed_dim, h, w) latent -> quantise (fp32 distances) -> (B, 3, f h, f w) image, not clamped."""
        if quantize:
            z, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(image))
