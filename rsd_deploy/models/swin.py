"""Channels-first Swin layers of ResShift's UNet, with the official (non-standard) shifted-window mask.

Everything that depends only on the window geometry (relative-position index, the in-window mask pattern)
is built once at construction; nothing is built on the host inside ``forward`` and nothing depends on the
runtime H, W except reshapes, so the same code runs eagerly, under CUDA graphs and in exported graphs.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rsd_deploy.models.layers import NORM_GROUPS, is_exporting, normalization

MASK_VALUE = -100.0  # the official additive mask value (safe in fp16/bf16)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) int64 index into the (2w-1)^2 bias table (standard Swin layout, row-major tokens)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def official_window_mask_pattern(window: int, shift: int) -> torch.Tensor:
    """The (w*w, w*w) additive mask the official code applies inside each bottom-row window.

    Upstream writes its region labels along rows only and flattens the label windows column-major while
    tokens are flattened row-major. Net effect: in the bottom row of windows, query tokens in window
    columns ``< w - shift`` cannot attend to key tokens in columns ``>= w - shift`` and vice versa.
    All other windows (the right-most column included) are unmasked.
    """
    cols = torch.arange(window * window) % window
    group = cols >= (window - shift)
    return torch.where(group[:, None] != group[None, :], MASK_VALUE, 0.0).float()


def official_shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """The full (nW, w*w, w*w) mask for an H x W map (nW windows in raster order), as the official code builds it.

    Used to validate against the ``attn_mask`` buffers of official checkpoints; ``forward`` applies
    the same mask without materialising it (only the last ``W / w`` windows are non-zero).
    """
    n_h, n_w = height // window, width // window
    mask = torch.zeros(n_h * n_w, window * window, window * window)
    if shift > 0:
        mask[(n_h - 1) * n_w:] = official_window_mask_pattern(window, shift)
    return mask


class WindowAttention(nn.Module):
    """Multi-head self-attention inside w x w windows with a learned relative-position bias.

    Key names follow the official checkpoints: ``qkv``, ``proj``, ``relative_position_bias_table`` and the
    (non-persistent here) ``relative_position_index`` buffer.
    """

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.dim, self.window, self.num_heads = dim, window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self._bias_cache: Dict[Tuple, torch.Tensor] = {}

    def position_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """(heads, N, N) bias; cached for inference (keyed on device, dtype and the table's version)."""
        table = self.relative_position_bias_table
        cacheable = not (self.training or torch.is_grad_enabled() or is_exporting())
        key = (table.device, dtype, table._version, table.data_ptr()) if cacheable else None
        if key is not None and key in self._bias_cache:
            return self._bias_cache[key]
        n = self.window * self.window
        bias = table[self.relative_position_index.reshape(-1)].reshape(n, n, self.num_heads)
        bias = bias.permute(2, 0, 1).contiguous().to(dtype)
        if cacheable:
            self._bias_cache.clear()
            self._bias_cache[key] = bias
        return bias

    def forward(self, tokens: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """tokens (B_, N, C) -> (B_, N, C); ``attn_bias`` broadcasts to (B_, heads, N, N)."""
        b, n, c = tokens.shape
        qkv = self.qkv(tokens).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """1x1 conv -> exact GELU -> 1x1 conv (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """``x + WMSA(GN(x))`` then ``x + MLP(GN(x))`` on a channels-first map; optional cyclic shift."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float,
                 groups: int = NORM_GROUPS):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = normalization(dim, groups=groups)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = normalization(dim, groups=groups)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift > 0:
            self.register_buffer("window_mask", official_window_mask_pattern(window, shift), persistent=False)
        else:
            self.window_mask = None

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws = self.window
        nh, nw = h // ws, w // ws
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(2, 3))
        # (B, C, H, W) -> (B, nh, nw, ws*ws, C): windows in raster order, tokens row-major inside
        win = x.reshape(b, c, nh, ws, nw, ws).permute(0, 2, 4, 3, 5, 1).reshape(b, nh, nw * ws * ws, c)
        bias = self.attn.position_bias(x.dtype)
        n = ws * ws
        if self.window_mask is None:
            out = self.attn(win.reshape(-1, n, c), bias)
            out = out.reshape(b, nh, nw * n, c)
        else:
            # only the bottom row of windows is masked (official quirk): attend in two groups
            top = self.attn(win[:, :-1].reshape(-1, n, c), bias).reshape(b, nh - 1, nw * n, c)
            bottom = self.attn(win[:, -1:].reshape(-1, n, c), bias + self.window_mask.to(x.dtype))
            out = torch.cat([top, bottom.reshape(b, 1, nw * n, c)], dim=1)
        out = out.reshape(b, nh, nw, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(2, 3))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Proj(nn.Module):
    """1x1 conv wrapper so keys read ``patch_embed.proj`` / ``patch_unembed.proj``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """conv1x1 C->D, ``depth`` Swin blocks (odd ones shifted when the construction resolution exceeds the
    window), conv1x1 D->C. No residual around the layer (as upstream)."""

    def __init__(self, channels: int, embed_dim: int, num_heads: int, window: int, resolution: int, depth: int,
                 mlp_ratio: float, groups: int = NORM_GROUPS):
        super().__init__()
        if resolution <= window:  # window clipped to the construction resolution, no shift
            window, shift = resolution, 0
        else:
            shift = window // 2
        # registration order = the official state-dict key order
        self.patch_embed = _Proj(channels, embed_dim)
        self.patch_unembed = _Proj(embed_dim, channels)
        self.blocks = nn.ModuleList(
            SwinBlock(embed_dim, num_heads, window, shift if i % 2 else 0, mlp_ratio, groups) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)
