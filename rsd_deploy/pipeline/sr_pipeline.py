"""The x4 SR pipeline over any backend: pad -> bicubic x4 -> encode -> sample -> decode -> blend.

Host side (here): tiling, padding, bicubic x4, noise, the schedule arithmetic, blending, clamping.
Backend side (rsd_deploy.backends): the three networks. So the same pipeline drives PyTorch,
ONNX Runtime and TensorRT, and every backend consumes the same noise.
"""
from __future__ import annotations

import logging
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from rsd_deploy.backends.base import Backend
from rsd_deploy.errors import ConfigError, ShapeError
from rsd_deploy.models.sampler import SamplingNoise, sample
from rsd_deploy.pipeline.image_io import LRImage, SRCanvas, bicubic_x4, pad_to_multiple, to_model_range
from rsd_deploy.pipeline.noise import NOISE_CELL, draw_tiles_noise
from rsd_deploy.pipeline.tiling import FeatherBlender, RowSink, Tile, TilePlan
from rsd_deploy.types import ModelInfo, TileConfig

logger = logging.getLogger(__name__)

SCALE = 4  # VQ-f4 latent: LR px == latent px, SR = 4 x LR


def _batches(items: Sequence[Tile], size: int) -> Iterator[List[Tile]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


class SRPipeline:
    """LR image in, x4 SR image out, through ``backend``.

    One instance can process many images; it keeps no per-image state.
    """

    def __init__(self, backend: Backend, model: ModelInfo, tiling: TileConfig = TileConfig(),
                 seed: int = 0, progress: bool = False):
        tiling.validate()
        self.backend = backend
        self.model = model
        self.seed = seed
        self.progress = progress
        tile = tiling.tile
        if tile is not None and tile % model.input_multiple:
            rounded = -(-tile // model.input_multiple) * model.input_multiple
            logger.info("tile %d rounded up to %d (a multiple of the model's input multiple %d)",
                        tile, rounded, model.input_multiple)
            tile = rounded
        self.tiling = TileConfig(tile=tile, overlap=tiling.overlap, batch=tiling.batch)
        if backend.supported_steps is not None and model.kind.multistep:
            raise ConfigError(f"backend {backend.name!r} runs only steps {sorted(backend.supported_steps)}; "
                              f"{model.kind.value} needs all {model.schedule.T} steps: use the torch backend")

    # ----------------------------------------------------------------------------------- core
    @torch.no_grad()
    def sample(self, lq: torch.Tensor, noise: SamplingNoise) -> torch.Tensor:
        """Super-resolve padded LR tiles with the given noise.

        lq: (B, 3, h, w) float32 in [-1, 1], h and w multiples of ``model.input_multiple``.
        noise: latent-size noise (see SamplingNoise). Returns the decoded (B, 3, 4h, 4w) float32
        on the CPU, neither cropped nor clamped.
        """
        h, w = lq.shape[-2:]
        m = self.model.input_multiple
        if lq.ndim != 4 or lq.shape[1] != 3 or h % m or w % m:
            raise ShapeError(f"lq must be (B, 3, h, w) with h, w multiples of {m}; got {tuple(lq.shape)}; "
                             f"pad it with pad_to_multiple")
        s = self.model.schedule
        T = s.T
        dev = self.backend.device
        lq = lq.to(dev, torch.float32)
        noise = noise.to(dev)
        up = bicubic_x4(lq)
        z_y = self.backend.encode(up)
        del up

        if self.model.kind.multistep:
            if len(noise.steps) < T - 1:
                raise ShapeError(f"{self.model.kind.value} needs {T - 1} step noises (T-1 .. 1); "
                                 f"got {len(noise.steps)}")
            noise = SamplingNoise(prior=noise.prior, steps=noise.steps)
        else:
            if self.model.noise_channels and noise.student is None:
                raise ShapeError("an RSD student needs a noise map; pass SamplingNoise(student=...)")
            noise = SamplingNoise(prior=noise.prior, student=noise.student if self.model.noise_channels else None)
        z = sample(self.backend.denoise, s, z_y, lq, noise, multistep=self.model.kind.multistep)
        return self.backend.decode(z).float().cpu()

    def draw_noise(self, origins: Sequence[tuple], h: int, w: int) -> SamplingNoise:
        """Noise for tiles of padded latent size (h, w) at LR origins [(y, x), ...]."""
        return draw_tiles_noise(self.seed, origins, h, w, noise_channels=self.model.noise_channels,
                                num_steps=self.model.schedule.T if self.model.kind.multistep else 0,
                                cell=NOISE_CELL)

    # ---------------------------------------------------------------------------- whole images
    def upscale_array(self, rgb: np.ndarray, sink: Optional[RowSink] = None) -> Optional[np.ndarray]:
        """Super-resolve an (H, W, 3) RGB image: uint8, uint16, or float32 in [-1, 1].

        With ``sink``: finished SR rows (float32 (n, 4W, 3), blended, not clamped) go to
        ``sink(first_row, rows)`` as they complete and None is returned. Without: returns the
        (4H, 4W, 3) float32 SR image clamped to [-1, 1] (memory grows with the image).
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ShapeError(f"expected an (H, W, 3) RGB array; got shape {rgb.shape}")
        height, width = rgb.shape[:2]
        if height == 0 or width == 0:
            raise ShapeError(f"image is empty ({height}x{width}); nothing to upscale")
        result = None
        if sink is None:
            result = np.empty((height * SCALE, width * SCALE, 3), np.float32)

            def sink(y0: int, rows: np.ndarray) -> None:
                result[y0:y0 + rows.shape[0]] = np.clip(rows, -1.0, 1.0)

        plan = TilePlan.build(height, width, self.tiling.tile, self.tiling.overlap)
        blender = FeatherBlender(plan, SCALE, 3, sink)
        tiles = plan.tiles
        batches = list(_batches(tiles, self.tiling.batch))
        bar = tqdm(batches, desc="tiles", unit="batch", leave=False,
                   disable=None if self.progress and len(batches) > 1 else True)
        for batch in bar:
            lq = torch.stack([
                torch.from_numpy(to_model_range(rgb[t.y:t.y + t.h, t.x:t.x + t.w])).permute(2, 0, 1)
                for t in batch
            ])
            lq = pad_to_multiple(lq, self.model.input_multiple)
            noise = self.draw_noise([(t.y, t.x) for t in batch], lq.shape[-2], lq.shape[-1])
            sr = self.sample(lq, noise)[:, :, :plan.tile_h * SCALE, :plan.tile_w * SCALE]
            sr_hwc = sr.permute(0, 2, 3, 1).numpy()
            for t, tile_sr in zip(batch, sr_hwc):
                blender.add(t, tile_sr)
        if not blender.done:  # pragma: no cover - guarded by the tiling tests
            raise RuntimeError("tile blending did not cover the whole image")
        return result

    def upscale_image(self, lr: LRImage) -> SRCanvas:
        """Super-resolve a decoded image into an output canvas in the file's layout and depth."""
        canvas = SRCanvas(lr, SCALE)
        self.upscale_array(lr.rgb, sink=canvas.write_rows)
        return canvas
