"""What is compared: the four SR methods (contenders) and the runtimes/precisions (backend variants).

A contender is a sampling recipe over the same three networks: RSD and SinSR are one UNet call at
t = T-1 of the v1 schedule (RSD with one extra noise input), ResShift v3 is 4 steps and v1 15
steps. Models come from checkpoints, or, for speed figures, are the full-size (or tiny)
architectures with seeded random weights (weights do not change speed).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from rsd_deploy.errors import BackendUnavailableError, CheckpointError, ConfigError, RSDError
from rsd_deploy.types import ModelKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contender:
    """One SR method: its schedule preset, number of UNet calls and extra noise inputs."""

    key: str
    label: str
    schedule: str  # Schedule.preset name
    nfe: int  # UNet calls per image
    noise_channels: int = 0

    @property
    def one_step(self) -> bool:
        return self.nfe == 1


#: one contender per model kind (rsd_deploy.types.ModelKind is the one list)
CONTENDERS: Dict[str, Contender] = {
    k.value: Contender(k.value, k.label, k.schedule_preset, k.nfe, noise_channels=k.noise_channels)
    for k in ModelKind
}
#: RSD is what the report compares everything else against
REFERENCE_CONTENDER = ModelKind.RSD.value


def parse_contenders(keys: Iterable[str]) -> List[Contender]:
    out = []
    for k in keys:
        if k not in CONTENDERS:
            raise ConfigError(f"unknown contender {k!r}; choose from {', '.join(CONTENDERS)}")
        out.append(CONTENDERS[k])
    return out


@dataclass(frozen=True)
class BackendVariant:
    """A runtime + precision + device, e.g. ``torch-fp32`` on cpu or ``ort-int8``.

    runtime: ``torch`` (eager, the pipeline's backend), ``torch-fast`` (backends/fast_torch_backend.py:
    low-precision weights, channels-last, CUDA graphs per shape on CUDA), ``torch-compile`` (the same
    plus torch.compile of each network; CPU too), ``onnxruntime``, ``openvino`` or ``tensorrt``.
    """

    key: str
    runtime: str
    precision: str
    device: str = "cpu"
    provider: Optional[str] = None  # ONNX Runtime execution provider

    @property
    def label(self) -> str:
        return self.key if self.device == "cpu" or self.device in self.key else f"{self.key} ({self.device})"


_RUNTIME_OF = {"torch": "torch", "torch-fast": "torch-fast", "torch-compile": "torch-compile", "ort": "onnxruntime",
               "ov": "openvino", "trt": "tensorrt"}


def parse_backend_variant(key: str, device: str) -> BackendVariant:
    """``torch-fp32``, ``torch-bf16``, ``torch-fp16``, ``torch-fast-fp16``, ``ort-fp32``, ``ort-fp16``,
    ``ort-int8``, ``ov-fp32``, ``ov-bf16``, ``ov-int8``, ``ort-cuda-fp16``, ``ort-trt-fp16``, ``trt-fp16`` ...
    -> BackendVariant. ``<runtime>-auto`` becomes the precision ``--precision auto`` picks for that runtime
    on ``device`` (capabilities.auto_precision), e.g. ``torch-auto`` -> ``torch-bf16`` on a bf16 CPU."""
    parts = key.split("-")
    precision = parts[-1]
    prefix = "-".join(parts[:-1])
    if precision == "auto" and prefix in _RUNTIME_OF:
        from rsd_deploy.backends.capabilities import auto_precision

        precision = auto_precision(_RUNTIME_OF[prefix], device)[0]
        key = f"{prefix}-{precision}"
    provider = None
    if prefix in ("ort-cuda", "ort-trt"):
        provider = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}[prefix]
        prefix = "ort"
    elif prefix == "ort":
        provider = "CPUExecutionProvider" if device == "cpu" else "CUDAExecutionProvider"
    if prefix not in _RUNTIME_OF or precision not in ("fp32", "fp16", "bf16", "int8"):
        raise ConfigError(f"unknown backend {key!r}; use <torch|torch-fast|torch-compile|ort|ort-cuda|ort-trt|ov|trt>-"
                       f"<auto|fp32|fp16|bf16|int8>")
    runtime = _RUNTIME_OF[prefix]
    if runtime.startswith("torch") and precision == "int8":
        raise ConfigError(f"backend {key!r}: PyTorch runs fp32, fp16 or bf16; int8 is ONNX Runtime / OpenVINO / "
                       f"TensorRT only")
    if runtime == "openvino" and precision == "fp16":
        raise ConfigError(f"backend {key!r}: OpenVINO on the CPU runs fp32, bf16 or int8")
    return BackendVariant(key=key, runtime=runtime, precision=precision, device=device, provider=provider)


def unavailable_reason(variant: BackendVariant) -> Optional[str]:
    """Why a variant cannot run on this machine, or None if it can."""
    if variant.device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device"
    if variant.runtime == "torch" and variant.precision == "fp16" and variant.device == "cpu":
        return "fp16 only on CUDA (CPU half kernels are slow reference code)"
    if variant.runtime == "torch-fast" and not variant.device.startswith("cuda"):
        return "the fast path (CUDA graphs) needs CUDA; on the CPU use torch-bf16 (channels-last) or torch-compile"
    if variant.precision == "bf16" and not variant.device.startswith("cuda"):
        from rsd_deploy.backends.capabilities import cpu_has_bf16

        if not cpu_has_bf16():
            return "this CPU has no native bf16 (AVX512-BF16/AMX-BF16)"
    if variant.runtime == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino not installed (pip install rsd-deploy[openvino])"
    if variant.runtime == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime not installed (pip install rsd-deploy[onnx])"
        if variant.provider not in ort.get_available_providers():
            return f"{variant.provider} not available in this onnxruntime build"
    if variant.runtime == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "tensorrt not installed (pip install rsd-deploy[trt])"
        if not torch.cuda.is_available():
            return "no CUDA device"
    return None


# ---------------------------------------------------------------- models

@dataclass
class ModelSet:
    """The networks every contender needs: one UNet per contender and the shared VQ autoencoder."""

    unets: Dict[str, nn.Module]
    vq: nn.Module
    random_weights: bool
    arch: str  # "full", "tiny" or "checkpoint"
    sources: Dict[str, str]

    @property
    def input_multiple(self) -> int:
        return max(int(getattr(u, "config").input_multiple) for u in self.unets.values())


def _fill_zeros(module: nn.Module, generator: torch.Generator) -> None:
    """Give zero-initialised tensors small random values, so no timing profits from exact zeros."""
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and not torch.any(p):
                p.copy_(torch.randn(p.shape, generator=generator) * 1e-3)


def random_models(contenders: List[Contender], arch: str = "full", seed: int = 0) -> ModelSet:
    """Seeded random-weight models of the ``full`` (official realsr x4) or ``tiny`` architecture.

    Contenders with the same UNet shape share one module (v1, v3 and SinSR are the same network).
    """
    from rsd_deploy.config import UNetConfig, VQConfig
    from rsd_deploy.models import UNetSwin, VQAutoencoder

    if arch not in ("full", "tiny"):
        raise ConfigError(f"unknown architecture {arch!r}; use full or tiny")
    # each network has its own seed, so the same weights come out whatever the contender order
    # (graphs exported in another process with the same seed hold the same weights)
    by_channels: Dict[int, nn.Module] = {}
    unets: Dict[str, nn.Module] = {}
    for c in contenders:
        if c.noise_channels not in by_channels:
            torch.manual_seed(seed + 1 + c.noise_channels)
            cfg = getattr(UNetConfig, arch)(noise_channels=c.noise_channels)
            unet = UNetSwin(cfg).eval()
            _fill_zeros(unet, torch.Generator().manual_seed(seed + 1 + c.noise_channels))
            by_channels[c.noise_channels] = unet
        unets[c.key] = by_channels[c.noise_channels]
    torch.manual_seed(seed)
    vq = VQAutoencoder(getattr(VQConfig, arch)()).eval()
    _fill_zeros(vq, torch.Generator().manual_seed(seed))
    sources = {c.key: f"random {arch} (seed {seed})" for c in contenders}
    sources["vq"] = f"random {arch} (seed {seed})"
    return ModelSet(unets=unets, vq=vq, random_weights=True, arch=arch, sources=sources)


def checkpoint_models(contenders: List[Contender], checkpoints: Dict[str, Path], vq_path: Path) -> ModelSet:
    """Load each contender's UNet and the VQ autoencoder with ``rsd_deploy.load_checkpoint``."""
    from rsd_deploy import load_checkpoint

    missing = [c.key for c in contenders if c.key not in checkpoints]
    if missing:
        raise CheckpointError(f"no checkpoint given for {', '.join(missing)}; pass --checkpoint "
                              f"{missing[0]}=PATH for each contender, or none at all for random weights")
    unets: Dict[str, nn.Module] = {}
    loaded: Dict[Path, nn.Module] = {}
    for c in contenders:
        path = Path(checkpoints[c.key])
        if path not in loaded:
            loaded[path] = load_checkpoint(path)
        unet = loaded[path]
        got = int(getattr(unet.config, "noise_channels", -1)) if hasattr(unet, "config") else -1
        if not hasattr(unet.config, "noise_channels"):
            raise CheckpointError(f"{path}: is not a UNet checkpoint; pass a ResShift/SinSR/RSD UNet for {c.key}")
        if got != c.noise_channels:
            raise CheckpointError(f"{path}: UNet has {got} noise channels but {c.label} needs "
                                  f"{c.noise_channels}; pass the right checkpoint for {c.key}")
        unets[c.key] = unet.eval()
    vq = load_checkpoint(Path(vq_path))
    if not hasattr(vq, "decode"):
        raise CheckpointError(f"{vq_path}: is not a VQ autoencoder checkpoint; pass autoencoder_vq_f4.pth with --vq")
    sources = {c.key: str(checkpoints[c.key]) for c in contenders}
    sources["vq"] = str(vq_path)
    return ModelSet(unets=unets, vq=vq.eval(), random_weights=False, arch="checkpoint", sources=sources)


def schedule_for(contender: Contender):
    from rsd_deploy.models import Schedule

    return Schedule.preset(contender.schedule)


def steps_for(contender: Contender, schedule) -> Tuple[int, ...]:
    """Step indices the UNet is called at, in call order (T-1 first)."""
    T = int(schedule.T)
    if contender.one_step:
        return (T - 1,)
    if contender.nfe != T:
        raise RSDError(f"{contender.label}: schedule has {T} steps, expected {contender.nfe}")
    return tuple(range(T - 1, -1, -1))


def ensure_runtime(variant: BackendVariant) -> None:
    reason = unavailable_reason(variant)
    if reason:
        raise BackendUnavailableError(f"backend {variant.key}: {reason}")
