"""Sampling noise that depends only on the seed and the latent position, never on the backend,
the device or the order tiles are processed in.

The latent plane is cut into fixed ``cell`` x ``cell`` cells on a global grid anchored at the
image origin (latent px == LR px). Each cell gets its own CPU ``torch.Generator`` seeded from
(seed, cell row, cell column) and draws its noise maps in a fixed order. A tile's noise is the
crop of the cells it covers, so

* a tile's noise does not depend on which tiles ran before it, nor on the batch size;
* overlapping tiles see identical noise in their overlap, and a tiled run sees the same noise as
  an untiled run at every image pixel (only the networks' view of the context differs);
* the torch, ONNX Runtime and TensorRT runs of the pipeline consume bit-identical noise.

Draw order inside a cell: the prior eps (3 ch), then the RSD student's noise map
(``noise_channels``), then one map per sampling step for multi-step ResShift (3 ch each, T draws,
the last one unused by the maths, as upstream draws it).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from rsd_deploy.errors import ShapeError
from rsd_deploy.models.sampler import SamplingNoise  # the sampler's input; drawn here

NOISE_CELL = 64  # LR px; a multiple of every model's input multiple keeps cells aligned to tiles
LATENT_CHANNELS = 3


def cell_seed(seed: int, cell_row: int, cell_col: int) -> int:
    """A well-mixed 63-bit generator seed from (seed, cell row, cell column)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, cell_row, cell_col]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def _cell_maps(seed: int, row: int, col: int, channels: Sequence[int], cell: int) -> List[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(cell_seed(seed, row, col))
    return [torch.randn((c, cell, cell), generator=gen, dtype=torch.float32) for c in channels]


def draw_region_noise(seed: int, y: int, x: int, h: int, w: int, *, noise_channels: int = 0,
                      num_steps: int = 0, cell: int = NOISE_CELL) -> SamplingNoise:
    """Noise for the latent region rows [y, y+h), columns [x, x+w) of the global grid (batch 1).

    ``num_steps`` > 0 draws ResShift step noises (T of them); 0 is a one-step model. Regions may
    extend past the image (padding); the grid is unbounded and non-negative.
    """
    if y < 0 or x < 0 or h <= 0 or w <= 0:
        raise ShapeError(f"noise region y={y} x={x} h={h} w={w} is invalid; offsets >= 0, sizes > 0")
    channels = [LATENT_CHANNELS] + ([noise_channels] if noise_channels else []) + [LATENT_CHANNELS] * num_steps
    out = [torch.empty((1, c, h, w), dtype=torch.float32) for c in channels]
    for row in range(y // cell, (y + h - 1) // cell + 1):
        ry0, ry1 = max(y, row * cell), min(y + h, (row + 1) * cell)
        for col in range(x // cell, (x + w - 1) // cell + 1):
            rx0, rx1 = max(x, col * cell), min(x + w, (col + 1) * cell)
            maps = _cell_maps(seed, row, col, channels, cell)
            for dst, src in zip(out, maps):
                dst[0, :, ry0 - y:ry1 - y, rx0 - x:rx1 - x] = src[:, ry0 - row * cell:ry1 - row * cell,
                                                                rx0 - col * cell:rx1 - col * cell]
    prior, rest = out[0], out[1:]
    student = None
    if noise_channels:
        student, rest = rest[0], rest[1:]
    return SamplingNoise(prior=prior, student=student, steps=tuple(rest))


def draw_tiles_noise(seed: int, origins: Sequence[Tuple[int, int]], h: int, w: int, *,
                     noise_channels: int = 0, num_steps: int = 0, cell: int = NOISE_CELL) -> SamplingNoise:
    """Batched noise for tiles of one size at LR/latent origins ``[(y, x), ...]`` -> batch B."""
    return SamplingNoise.cat([
        draw_region_noise(seed, y, x, h, w, noise_channels=noise_channels, num_steps=num_steps, cell=cell)
        for (y, x) in origins
    ])

