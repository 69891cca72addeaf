"""What the host CPU can do fast: the one capability probe behind ``--precision auto`` and the bf16 checks.

bf16 matrix work is native with AVX512-BF16 (Intel Cooper Lake+, AMD Zen 4+) or AMX-BF16 (Intel Sapphire
Rapids+); without either, PyTorch and OpenVINO emulate bf16 and it is slower than fp32. INT8 dot products
are native with AVX512-VNNI / AVX-VNNI / AMX-INT8. Flags come from ``/proc/cpuinfo`` (Linux); elsewhere
PyTorch's own CPU capability string is asked. Tests monkeypatch :func:`cpu_flags` to simulate other CPUs.
"""
from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path
from typing import FrozenSet

logger = logging.getLogger(__name__)

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo_flags() -> FrozenSet[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_flags() -> FrozenSet[str]:
    """The CPU feature flags of this host (lower case, as in /proc/cpuinfo); empty when unknown."""
    flags = _proc_cpuinfo_flags()
    if flags:
        return flags
    try:  # macOS / Windows: torch knows whether its AVX512 kernels run here, not bf16 itself
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability()).lower()
    except Exception:  # pragma: no cover - torch always importable in this package
        return frozenset()
    return frozenset({capability})


def cpu_has_bf16() -> bool:
    """True when bf16 matrix work runs natively (AVX512-BF16 or AMX-BF16)."""
    return any(f in cpu_flags() for f in BF16_FLAGS)


def cpu_has_amx() -> bool:
    """True with AMX-BF16 tiles (Intel Sapphire Rapids+), where bf16 training steps beat fp32 on the CPU."""
    return "amx_bf16" in cpu_flags()


def cpu_has_int8_dot() -> bool:
    """True when int8 dot products run natively (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return any(f in cpu_flags() for f in INT8_FLAGS)


def cpu_summary() -> str:
    """One line for logs and results: the CPU model and its bf16/int8 capabilities."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = sorted(f for f in cpu_flags() if f in BF16_FLAGS + INT8_FLAGS)
    return f"{name} ({', '.join(flags) if flags else 'no bf16/int8 dot-product extensions'})"


#: what ``--precision auto`` means, per runtime, on each kind of device
AUTO_RULE = ("bf16 on CPUs with AVX512-BF16/AMX (torch, OpenVINO), fp16 on CUDA (torch, TensorRT, ONNX Runtime CUDA), "
             "fp32 elsewhere")


def auto_precision(runtime: str, device: str) -> tuple:
    """(precision, why) for ``--precision auto``: the fastest precision this device runs natively whose
    measured accuracy is within the bounds (benchmarks/results/cpu-fast: bf16 >= 40 dB from fp32 at the
    pipeline output). ``runtime``: torch | onnxruntime | openvino | tensorrt."""
    kind = str(device).split(":", 1)[0]
    if kind in ("cuda", "tensorrt", "trt") or runtime == "tensorrt":
        return "fp16", "CUDA device: fp16 tensor cores"
    if runtime == "onnxruntime":
        # ORT's CPU provider has no bf16 kernels and its int8 Q/DQ convolutions measured no faster than fp32
        return "fp32", "ONNX Runtime on the CPU: no faster precision (bf16 unsupported, int8 no gain)"
    if cpu_has_bf16():
        return "bf16", f"CPU with native bf16 ({', '.join(f for f in BF16_FLAGS if f in cpu_flags())})"
    return "fp32", "CPU without AVX512-BF16/AMX-BF16: bf16 would be emulated (slower than fp32)"


def training_precision(requested: str, device: str) -> str:
    """The autocast precision rsd-train uses for ``optim.precision`` (fp32 | bf16 | auto) on ``device``.

    auto: bf16 where it pays (CUDA with bf16, or a CPU with AMX-BF16), else fp32. AVX512-BF16 alone does not
    pay for training: on an Intel Xeon with AVX512-BF16 and no AMX, bf16 autocast measured slower than fp32
    (demo teacher 5.1 against 7.7 images/s, demo VQ 2.0 against 2.5; train/RESULTS.md). An explicit bf16 is
    kept; without native bf16 it is warned about: emulated bf16 measured ~15x slower than fp32 for the demo VQ
    on an AVX2-only AMD EPYC (38 s against 2.5 s per step).
    """
    kind = str(device).split(":", 1)[0]
    if requested == "fp32":
        return "fp32"
    if kind == "cuda":
        import torch

        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        fast = native
    else:
        native, fast = cpu_has_bf16(), cpu_has_amx()
    if requested == "auto":
        chosen = "bf16" if fast else "fp32"
        logger.info("optim.precision auto: %s (%s)", chosen, cpu_summary() if kind == "cpu" else kind)
        return chosen
    if not native:
        logger.warning("optim.precision bf16 on %s: bf16 is emulated there, many times slower than fp32; use "
                       "optim.precision=auto or fp32", cpu_summary() if kind == "cpu" else kind)
    return requested
