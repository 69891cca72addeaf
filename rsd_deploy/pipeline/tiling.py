"""Tile geometry and feathered blending for the SR pipeline (pure numpy, no model).

Tiles are planned in LR pixels (LR px == latent px for the x4 VQ-f4 model). The plan is a product
grid: row starts x column starts, every tile the same size, so tiles batch without padding
differences. Outputs are blended on the SR canvas with separable raised-cosine ramps over each
actual overlap (the clamped last tile may overlap its neighbour by more than the nominal overlap),
normalised by the weight sum. Because the weights are separable and the plan is a product grid,
the weight sum is the outer product of two 1-D sums: no 2-D weight canvas is ever stored.

Finished SR rows are handed to a sink as soon as no remaining tile touches them, so the float32
accumulator only spans the rows of the tiles in flight (memory ~ tile size x batch x image width),
not the whole SR image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import numpy as np

from rsd_deploy.errors import ConfigError

#: receives (first SR row, rows) with rows float32 (n, W_sr, C), blended, not clamped; the rows
#: buffer is the sink's (it may modify it in place) and is dropped after the call
RowSink = Callable[[int, np.ndarray], None]


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets 0, stride, 2*stride, ... with the last one clamped to ``length - tile``.

    ``length <= tile`` gives the single start 0 (one tile covering the whole side).
    """
    if length <= 0:
        raise ConfigError(f"cannot tile a side of length {length}; the image is empty")
    if tile <= 0 or not 0 <= overlap < tile:
        raise ConfigError(f"tile {tile} with overlap {overlap} is invalid; use tile > 0 and 0 <= overlap < tile")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def raised_cosine_ramp(n: int) -> np.ndarray:
    """Rising ramp of ``n`` float32 weights in (0, 1); ``ramp + ramp[::-1] == 1`` elementwise."""
    k = np.arange(n, dtype=np.float64) + 0.5
    return (0.5 - 0.5 * np.cos(np.pi * k / n)).astype(np.float32)


def feather_weights_1d(starts: Sequence[int], tile: int, scale: int) -> List[np.ndarray]:
    """Per-tile 1-D blend weights on the ``scale``-times larger canvas.

    Tile i ramps up over its overlap with tile i-1 and down over its overlap with tile i+1; the
    image border gets full weight. Weights are > 0 everywhere, so the normalisation is defined.
    """
    weights = []
    for i, start in enumerate(starts):
        w = np.ones(tile * scale, dtype=np.float32)
        if i > 0:
            ramp_in = (starts[i - 1] + tile - start) * scale
            if ramp_in > 0:
                w[:ramp_in] *= raised_cosine_ramp(ramp_in)
        if i + 1 < len(starts):
            ramp_out = (start + tile - starts[i + 1]) * scale
            if ramp_out > 0:
                w[tile * scale - ramp_out:] *= raised_cosine_ramp(ramp_out)[::-1]
        weights.append(w)
    return weights


@dataclass(frozen=True)
class Tile:
    """One tile in LR pixels: rows [y, y + h), columns [x, x + w); (row, col) index in the grid."""

    row: int
    col: int
    y: int
    x: int
    h: int
    w: int


@dataclass(frozen=True)
class TilePlan:
    """A product grid of equal-size tiles covering an ``height`` x ``width`` LR image."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: Tuple[int, ...]
    xs: Tuple[int, ...]

    @classmethod
    def build(cls, height: int, width: int, tile: int | None, overlap: int) -> "TilePlan":
        """Plan ``tile`` x ``tile`` tiles (clipped to the image) with ``overlap`` LR px; None: one tile."""
        if height <= 0 or width <= 0:
            raise ConfigError(f"cannot tile a {height}x{width} image; it is empty")
        tile_h = height if tile is None else min(tile, height)
        tile_w = width if tile is None else min(tile, width)
        ys = tile_starts(height, tile_h, min(overlap, tile_h - 1))
        xs = tile_starts(width, tile_w, min(overlap, tile_w - 1))
        return cls(height, width, tile_h, tile_w, tuple(ys), tuple(xs))

    @property
    def tiles(self) -> List[Tile]:
        """All tiles in raster order (rows top to bottom, columns left to right)."""
        return [Tile(r, c, y, x, self.tile_h, self.tile_w)
                for r, y in enumerate(self.ys) for c, x in enumerate(self.xs)]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


class FeatherBlender:
    """Accumulates SR tiles with feathered weights and emits finished rows to a sink.

    Tiles must arrive in raster order (any batching). Rows of the SR canvas are final once every
    tile of the tile rows covering them has been added; they are normalised by the separable
    weight sum and passed to ``sink(first_row, rows)`` (float32, shape (n, W_sr, C)), then dropped.
    """

    def __init__(self, plan: TilePlan, scale: int, channels: int, sink: RowSink):
        self.plan = plan
        self.scale = scale
        self.channels = channels
        self.sink = sink
        self._wy = feather_weights_1d(plan.ys, plan.tile_h, scale)
        self._wx = feather_weights_1d(plan.xs, plan.tile_w, scale)
        out_h, out_w = plan.height * scale, plan.width * scale
        self._sum_y = np.zeros(out_h, np.float32)
        self._sum_x = np.zeros(out_w, np.float32)
        for y, w in zip(plan.ys, self._wy):
            self._sum_y[y * scale:(y + plan.tile_h) * scale] += w
        for x, w in zip(plan.xs, self._wx):
            self._sum_x[x * scale:(x + plan.tile_w) * scale] += w
        self._acc = np.zeros((0, out_w, channels), np.float32)
        self._acc_y0 = 0  # SR row of self._acc[0]; rows above are already emitted
        self._tiles_left_in_row = [len(plan.xs)] * len(plan.ys)
        self._next_row_to_finish = 0

    def add(self, tile: Tile, sr: np.ndarray) -> None:
        """Add one SR tile, float32 (tile_h*scale, tile_w*scale, C) HWC."""
        s = self.scale
        expected = (tile.h * s, tile.w * s, self.channels)
        if sr.shape != expected:
            raise ValueError(f"tile output has shape {sr.shape}, expected {expected}")
        y0, y1 = tile.y * s, (tile.y + tile.h) * s
        x0, x1 = tile.x * s, (tile.x + tile.w) * s
        if y1 > self._acc_y0 + self._acc.shape[0]:
            grow = y1 - (self._acc_y0 + self._acc.shape[0])
            self._acc = np.concatenate([self._acc, np.zeros((grow,) + self._acc.shape[1:], np.float32)])
        weight = self._wy[tile.row][:, None, None] * self._wx[tile.col][None, :, None]
        self._acc[y0 - self._acc_y0:y1 - self._acc_y0, x0:x1] += sr * weight
        self._tiles_left_in_row[tile.row] -= 1
        self._flush_finished_rows()

    def _flush_finished_rows(self) -> None:
        ys = self.plan.ys
        while self._next_row_to_finish < len(ys) and self._tiles_left_in_row[self._next_row_to_finish] == 0:
            self._next_row_to_finish += 1
        # rows above the next unfinished tile row's start receive no more contributions
        if self._next_row_to_finish < len(ys):
            final_until = ys[self._next_row_to_finish] * self.scale
        else:
            final_until = self.plan.height * self.scale
        n = final_until - self._acc_y0
        if n <= 0:
            return
        rows = self._acc[:n]
        rows /= self._sum_y[self._acc_y0:final_until, None, None]  # in place: no image-wide temporaries
        rows /= self._sum_x[None, :, None]
        self.sink(self._acc_y0, rows)
        self._acc = self._acc[n:].copy()  # copy: release the emitted rows' memory
        self._acc_y0 = final_until

    @property
    def done(self) -> bool:
        return self._acc_y0 == self.plan.height * self.scale
