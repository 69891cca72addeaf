"""ResShift's Swin-UNet (``UNetModelSwin``), written from MODEL_SPEC.md; RSD students via ``noise_channels``."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from rsd_deploy.config import UNetConfig
from rsd_deploy.models.layers import Downsample, ResBlock, Upsample, is_exporting, normalization, timestep_embedding
from rsd_deploy.models.swin import SwinLayer


class _Step(nn.Sequential):
    """A UNet stage: ResBlocks get the timestep embedding, everything else only the feature map."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetSwin(nn.Module):
    """x0-predicting Swin-UNet of ResShift (v1/v2/v3, SinSR) and of the RSD student.

    ``forward(x, t, lq, noise=None)``:
      x     (B, 3, h, w) float: the latent z_t already scaled by 1/sqrt(kappa^2 eta_t + 1) (the caller scales);
      t     (B,) int64: the raw step index (0 = least noisy), not rescaled;
      lq    (B, 3, h, w) float: the LR image in [-1, 1] at latent size;
      noise (B, noise_channels, h, w): the RSD student's N(0, I) input maps, required iff noise_channels > 0.
    h and w must be multiples of ``config.input_multiple``. Returns the x0 prediction (B, 3, h, w).
    State-dict keys equal the official ones (less the ``attn_mask`` / ``relative_position_index`` buffers,
    which are regenerated).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        emb_dim = c.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(c.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        in_ch = 2 * c.in_channels + c.noise_channels  # [x, lq, noise]
        self.input_blocks = nn.ModuleList([_Step(nn.Conv2d(in_ch, c.model_channels, 3, padding=1))])
        skip_channels: List[int] = [c.model_channels]
        ch, ds = c.model_channels, 1

        def swin(channels: int, resolution: int) -> SwinLayer:
            return SwinLayer(channels, c.swin_embed_dim, c.num_heads, c.window_size, resolution, c.swin_depth,
                             c.mlp_ratio, c.norm_groups)

        for level, mult in enumerate(c.channel_mult):
            for i in range(c.num_res_blocks[level]):
                layers: List[nn.Module] = [ResBlock(ch, emb_dim, mult * c.model_channels, groups=c.norm_groups)]
                ch = mult * c.model_channels
                if c.image_size // ds in c.attention_resolutions and i == 0:
                    layers.append(swin(ch, c.image_size // ds))
                self.input_blocks.append(_Step(*layers))
                skip_channels.append(ch)
            if level != c.levels - 1:
                self.input_blocks.append(_Step(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = _Step(ResBlock(ch, emb_dim, groups=c.norm_groups), swin(ch, c.image_size // ds),
                                  ResBlock(ch, emb_dim, groups=c.norm_groups))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * c.model_channels, groups=c.norm_groups)]
                ch = mult * c.model_channels
                if c.image_size // ds in c.attention_resolutions and i == 0:
                    layers.append(swin(ch, c.image_size // ds))
                if level and i == c.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(_Step(*layers))

        self.out = nn.Sequential(normalization(ch, groups=c.norm_groups), nn.SiLU(), nn.Conv2d(ch, c.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        c = self.config
        if not is_exporting():
            m = c.input_multiple
            if x.shape[-2] % m or x.shape[-1] % m:
                raise ValueError(f"latent size {tuple(x.shape[-2:])} must be a multiple of {m}; pad the input first")
            if (noise is None) != (c.noise_channels == 0):
                raise ValueError(f"this UNet takes noise_channels={c.noise_channels}: pass noise "
                                 f"(B, {c.noise_channels}, h, w)" if c.noise_channels else "this UNet takes no noise input")
        inputs = [x, lq] if noise is None else [x, lq, noise.to(x.dtype)]
        h = torch.cat(inputs, dim=1)
        emb = self.time_embed(timestep_embedding(t, c.model_channels).to(self.time_embed[0].weight.dtype))
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
