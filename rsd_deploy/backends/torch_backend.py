"""PyTorch backend: the reference runtime (CPU or CUDA; fp32, fp16 or bf16 through autocast).

Weights stay fp32; lower precision comes from ``torch.autocast`` as in the official sampler. The
UNet's GroupNorm statistics and the VQ quantiser's distances stay fp32 inside the models. fp16 is
CUDA-only (CPU fp16 kernels are slow and incomplete); bf16 works on both, and on the CPU it is
refused without native bf16 (AVX512-BF16/AMX: ``capabilities.cpu_has_bf16``), where it is emulated.

On the CPU bf16 runs channels-last (NHWC) by default: oneDNN's convolutions are NHWC-native, so NCHW
pays a reorder per convolution (the issue measured the fp32 full-size VQ decoder 2.5x faster NHWC);
fp32 stays NCHW by default, the bit-for-bit reference (``channels_last=True`` for the fast fp32 path).
``precision="auto"`` resolves to bf16 on CPUs with native bf16, fp16 on CUDA, fp32 elsewhere.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager, Optional, Union

import torch

from rsd_deploy.backends.base import Backend, register_backend
from rsd_deploy.errors import BackendUnavailableError, ConfigError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from rsd_deploy.models import Schedule, UNetSwin, VQAutoencoder

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> torch.device; BackendUnavailableError if CUDA is absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} asked for but CUDA is not available "
                                      f"(torch {torch.__version__}); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


@dataclass
class TorchOptions:
    """How to run the PyTorch models.

    unet: the UNetSwin (teacher, SinSR or RSD student); vq: the VQAutoencoder; schedule: its
    diffusion schedule (input scaling per step). device: cpu (default), cuda or cuda:N.
    precision: fp32 (default), bf16 (CPU and CUDA) or fp16 (CUDA only), through autocast; auto:
    capabilities.auto_precision. channels_last: NHWC networks (None: on the CPU for bf16, where oneDNN's
    convolutions are NHWC-native; fp32 stays NCHW, the exact reference); NHWC runs private copies.
    """

    unet: "UNetSwin"
    vq: "VQAutoencoder"
    schedule: "Schedule"
    device: Union[str, torch.device] = "cpu"
    precision: str = "fp32"
    channels_last: Optional[bool] = None


@register_backend("torch")
class TorchBackend(Backend):
    """Runs ``unet`` (UNetSwin) and ``vq`` (VQAutoencoder) with the schedule's input scaling.

    encode/denoise/decode take and return float32 NCHW tensors on ``device`` (inputs on any device
    are moved there).
    """

    name = "torch"
    Options = TorchOptions

    def __init__(self, options: TorchOptions):
        precision = options.precision
        if precision == "auto":
            from rsd_deploy.backends.capabilities import auto_precision

            precision, why = auto_precision("torch", str(options.device))
            logger.info("precision auto -> %s (%s)", precision, why)
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self._device = resolve_device(options.device)
        if precision == "fp16" and self._device.type != "cuda":
            raise ConfigError("fp16 needs a CUDA device; on the CPU use --precision bf16 or fp32")
        if precision == "bf16" and self._device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise BackendUnavailableError("this GPU does not support bf16; use --precision fp16 or fp32")
        if precision == "bf16" and self._device.type == "cpu":
            from rsd_deploy.backends.capabilities import cpu_has_bf16

            if not cpu_has_bf16():
                raise BackendUnavailableError("this CPU has no native bf16 (AVX512-BF16 or AMX-BF16): bf16 would be "
                                              "emulated, slower than fp32; use --precision fp32")
        self.precision = precision
        # fp32 stays the bit-for-bit reference (NHWC convolutions sum in another order, ~1e-6); the
        # lower precisions are the speed paths
        self.channels_last = (self._device.type == "cpu" and precision != "fp32") if options.channels_last is None \
            else bool(options.channels_last)
        self.schedule = options.schedule
        self.unet = options.unet.to(self._device).eval()
        self.vq = options.vq.to(self._device).eval()
        if self.channels_last:  # on private copies: the caller's modules keep their memory format
            import copy

            self.unet = copy.deepcopy(self.unet).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.vq = copy.deepcopy(self.vq).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.noise_channels = int(getattr(getattr(options.unet, "config", None), "noise_channels", 0))

    @property
    def device(self) -> torch.device:
        return self._device

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._device, torch.float32)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self) -> ContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._device.type, dtype=dtype)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 4h, 4w) image in [-1, 1] -> (B, 3, h, w) float32 continuous latent."""
        with self._autocast():
            z = self.vq.encode(self._input(image))
        return z.float().contiguous()

    @torch.no_grad()
    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x0 from the unscaled z_t (B, 3, h, w) at step index ``step``; lq (B, 3, h, w) in [-1, 1];
        noise (B, noise_channels, h, w) for RSD students. Returns float32 (B, 3, h, w)."""
        if not 0 <= step < self.schedule.T:
            raise ShapeError(f"step {step} is outside the schedule's 0..{self.schedule.T - 1}")
        if (noise is not None) != bool(self.noise_channels):
            raise ShapeError(f"this UNet takes {self.noise_channels} noise channels; "
                             f"{'pass' if self.noise_channels else 'do not pass'} a noise map")
        dev = self._device
        x = self.schedule.scale_input(self._input(z_t), step)
        t = torch.full((x.shape[0],), step, dtype=torch.int64, device=dev)
        with self._autocast():
            x0 = self.unet(x, t, self._input(lq), None if noise is None else self._input(noise))
        return x0.float().contiguous()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) latent -> quantise (fp32) -> (B, 3, 4h, 4w) float32 image, not clamped."""
        # quantise outside autocast: autocast would run the distance matmul in fp16/bf16 even on
        # fp32 inputs, and near-tie argmins would flip
        z_q, _ = self.vq.quantize_latent(z.to(self._device, torch.float32))
        with self._autocast():
            image = self.vq.decode(self._input(z_q), quantize=False)
        return image.float().contiguous()

    def close(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
