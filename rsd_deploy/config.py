"""Frozen configuration dataclasses for the networks. They travel with the weights (safetensors metadata)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Tuple, Type, TypeVar

T = TypeVar("T")


def _tupled(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _check_norm_groups(what: str, widths: list, groups: int) -> None:
    if groups < 1 or any(w % groups for w in widths):
        raise ValueError(f"every {what} width must be a multiple of norm_groups={groups} (GroupNorm), got {widths}")


class _ConfigMixin:
    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: Type[T], d: Dict[str, Any]) -> T:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        return cls(**_tupled(d))  # type: ignore[call-arg]


@dataclass(frozen=True)
class UNetConfig(_ConfigMixin):
    """Hyperparameters of ResShift's Swin-UNet (``UNetModelSwin``), RSD student when noise_channels > 0."""

    image_size: int = 64  # construction resolution: fixes which Swin layers shift and their window
    in_channels: int = 3
    model_channels: int = 160
    out_channels: int = 3
    num_res_blocks: Tuple[int, ...] = (2, 2, 2, 2)
    attention_resolutions: Tuple[int, ...] = (64, 32, 16, 8)
    channel_mult: Tuple[int, ...] = (1, 2, 2, 4)
    num_head_channels: int = 32
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4.0
    noise_channels: int = 0  # RSD student: extra N(0, I) input maps appended after [x, lq]
    # GroupNorm groups (official: 32). Narrow nets need fewer: with one channel per group every norm
    # removes each channel's mean, and a global colour (a flat region, a colour cast) cannot survive.
    norm_groups: int = 32

    def __post_init__(self) -> None:
        if len(self.num_res_blocks) != len(self.channel_mult):
            raise ValueError("num_res_blocks and channel_mult must have the same length")
        widths = [self.model_channels * m for m in self.channel_mult] + [self.swin_embed_dim]
        _check_norm_groups("UNet", widths, self.norm_groups)
        if self.swin_embed_dim % self.num_head_channels:
            raise ValueError("swin_embed_dim must be a multiple of num_head_channels")
        if self.noise_channels < 0:
            raise ValueError("noise_channels must be >= 0")

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    @property
    def input_multiple(self) -> int:
        """Latent H and W must be multiples of this: every Swin layer's (clipped) window times its downsampling."""
        multiple = 2 ** (self.levels - 1)
        for level in range(self.levels):
            ds = 2 ** level
            resolution = self.image_size // ds
            if resolution in self.attention_resolutions or level == self.levels - 1:  # the middle always has one
                multiple = math.lcm(multiple, min(self.window_size, resolution) * ds)
        return multiple

    @property
    def num_heads(self) -> int:
        return self.swin_embed_dim // self.num_head_channels

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @classmethod
    def full(cls, noise_channels: int = 0) -> "UNetConfig":
        """The official realsr x4 architecture (v1, v2, v3, SinSR; RSD with noise_channels=1)."""
        return cls(noise_channels=noise_channels)

    @classmethod
    def tiny(cls, noise_channels: int = 0) -> "UNetConfig":
        """The configuration of ``shared/fixtures/unet_tiny`` (input multiple 16)."""
        return cls(image_size=16, model_channels=32, num_res_blocks=(1, 1, 1), attention_resolutions=(16, 8),
                   channel_mult=(1, 1, 1), num_head_channels=16, swin_embed_dim=32, mlp_ratio=2.0,
                   noise_channels=noise_channels)


@dataclass(frozen=True)
class VQConfig(_ConfigMixin):
    """Hyperparameters of the VQ-f4 autoencoder (``VQModelTorch``)."""

    embed_dim: int = 3
    n_embed: int = 8192
    z_channels: int = 3
    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    in_channels: int = 3
    out_ch: int = 3
    norm_groups: int = 32  # GroupNorm groups (official: 32); see UNetConfig.norm_groups

    def __post_init__(self) -> None:
        _check_norm_groups("VQ", [self.ch * m for m in self.ch_mult], self.norm_groups)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def full(cls) -> "VQConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "VQConfig":
        """The configuration of ``shared/fixtures/vq_tiny``."""
        return cls(n_embed=64, ch=32, ch_mult=(1, 2, 1), num_res_blocks=1)
