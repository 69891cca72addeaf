"""The shared vocabulary of the toolkit: which model a checkpoint is, what the pipeline must know
about the networks behind a backend, and how images are tiled.

A bottom-layer module (it imports only ``rsd_deploy.errors``), so backends, the pipeline, the
exporter, the benchmark and the CLIs can all use it without importing each other.
``ModelKind`` is the one list of model kinds: CLI choices, benchmark contenders and export
options are derived from it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from rsd_deploy.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from rsd_deploy.models.schedule import Schedule


class ModelKind(str, enum.Enum):
    """Which sampler a checkpoint needs. ``str`` values are the CLI choices, fastest first."""

    RSD = "rsd"
    SINSR = "sinsr"
    RESSHIFT_V3 = "resshift-v3"
    RESSHIFT_V1 = "resshift-v1"

    @classmethod
    def choices(cls) -> list:
        """The values, for click.Choice and error messages."""
        return [k.value for k in cls]

    @property
    def schedule_preset(self) -> str:
        """'v3' (T=4) for ResShift v3; 'v1' (T=15) for v1 and its students SinSR and RSD."""
        return "v3" if self is ModelKind.RESSHIFT_V3 else "v1"

    @property
    def multistep(self) -> bool:
        return self in (ModelKind.RESSHIFT_V1, ModelKind.RESSHIFT_V3)

    @property
    def nfe(self) -> int:
        """UNet calls per image: the schedule's T for the ResShift teachers, 1 for the students."""
        return {ModelKind.RESSHIFT_V3: 4, ModelKind.RESSHIFT_V1: 15}.get(self, 1)

    @property
    def noise_channels(self) -> int:
        """Extra noise input channels of the UNet (the RSD student has one)."""
        return 1 if self is ModelKind.RSD else 0

    @property
    def label(self) -> str:
        return {ModelKind.RSD: "RSD", ModelKind.SINSR: "SinSR", ModelKind.RESSHIFT_V3: "ResShift v3",
                ModelKind.RESSHIFT_V1: "ResShift v1"}[self]


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline must know about the networks behind a backend."""

    kind: ModelKind
    schedule: "Schedule"
    input_multiple: int  # latent H, W must be multiples of this (64 full UNet, 16 tiny)
    noise_channels: int = 0  # RSD student extra input channels
    label: str = ""


@dataclass(frozen=True)
class TileConfig:
    """Tiling in LR pixels. ``tile`` None: the whole image is one tile (memory grows with it).

    ``tile`` is rounded up to the model's input multiple so tiles need no padding; ``overlap`` is
    the feathered band between neighbours; ``batch`` tiles run per backend call. Default 64: the
    models' training crop (latent 64 = SR 256) and the engines' optimal shape. The VQ's global
    attention makes the cost per pixel grow with the tile side: with an overlap of 1/8 tile, the
    full model costs about 1.4x (tile 64), 1.6x (128), 2.6x (256) the FLOPs of one untiled pass
    of its convolutions (MODEL_SPEC.md section 8 counts).
    """

    tile: Optional[int] = 64
    overlap: int = 8
    batch: int = 1

    def validate(self) -> None:
        if self.tile is not None and self.tile <= 0:
            raise ConfigError(f"tile size {self.tile} must be positive (LR pixels), or omit it to disable tiling")
        if self.overlap < 0 or (self.tile is not None and self.overlap >= self.tile):
            raise ConfigError(f"overlap {self.overlap} must be >= 0 and smaller than the tile size {self.tile}")
        if self.batch <= 0:
            raise ConfigError(f"tile batch {self.batch} must be >= 1")
