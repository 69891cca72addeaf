"""What the TensorRT runtime stands on: the ``tensorrt`` import, its version, the GPU, the logger,
and the few CUDA calls the runtime makes (one seam, :data:`CUDA`).

``tensorrt`` is imported lazily inside each function, so ``import rsd_deploy`` and every CLI work
without it. Both the engine build (:mod:`rsd_deploy.export.trt_build`) and the runtime
(:mod:`rsd_deploy.backends.trt_runtime`) use this module; it imports nothing from export.

:data:`CUDA` is the only way the runtime touches CUDA (device selection, streams, allocation,
graph capture). It is torch's CUDA here; the unit tests put the test double's device model in its
place (``tests/export/trt_fake.py``), so the runtime has no CPU-only code path.
"""
from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Sequence, Tuple

import torch

from rsd_deploy.errors import BackendUnavailableError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorrt

log = logging.getLogger(__name__)

#: oldest TensorRT with a usable strongly typed ONNX path (weak typing deprecated in 10.12)
MIN_TENSORRT = (10, 12)
INSTALL_HINT = "pip install rsd-deploy[trt]"


def parse_version(version: str) -> Tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); non-numeric parts end the tuple."""
    parts: List[int] = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def require_tensorrt() -> str:
    """Return the TensorRT version or raise BackendUnavailableError saying why it is unusable."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: wheel present but libnvinfer missing
        raise BackendUnavailableError(f"TensorRT is not installed ({INSTALL_HINT})") from exc
    version = getattr(trt, "__version__", None)
    # `tensorrt-stubs` alone leaves an importable namespace package without the runtime
    if not isinstance(version, str) or not hasattr(trt, "Builder"):
        raise BackendUnavailableError(
            f"the importable 'tensorrt' is only type stubs or a placeholder, not the runtime ({INSTALL_HINT})"
        )
    if parse_version(version)[:2] < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old; need >= {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} "
            f"(pip install 'tensorrt>={MIN_TENSORRT[0]}.{MIN_TENSORRT[1]}')"
        )
    return version


def tensorrt_version() -> str:
    """Installed TensorRT version string, e.g. '10.13.0.35'; raises BackendUnavailableError."""
    return require_tensorrt()


# --------------------------------------------------------------------------- CUDA seam


class TorchCuda:
    """The CUDA calls of the TensorRT runtime, through torch (no cuda-python needed)."""

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def current_device(self) -> int:
        return torch.cuda.current_device()

    def properties(self, index: int) -> Tuple[str, Tuple[int, int], bool]:
        """(name, compute capability, integrated GPU?) of device ``index``."""
        props = torch.cuda.get_device_properties(index)
        return str(props.name), (int(props.major), int(props.minor)), bool(getattr(props, "is_integrated", False))

    def device(self, device: torch.device) -> Any:
        """Context manager making ``device`` current (TensorRT uses the current device)."""
        return torch.cuda.device(device)

    def new_stream(self, device: torch.device) -> Any:
        return torch.cuda.Stream(device)

    def current_stream(self, device: torch.device) -> Any:
        return torch.cuda.current_stream(device)

    def use_stream(self, stream: Any) -> Any:
        return torch.cuda.stream(stream)

    def empty(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(tuple(shape), dtype=dtype, device=device)

    def copy_(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """``dst <- src`` on the current stream."""
        dst.copy_(src, non_blocking=True)

    def clone(self, tensor: torch.Tensor) -> torch.Tensor:
        """A copy made on the current stream."""
        return tensor.clone()

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        """Tell the caching allocator ``tensor`` is used on ``stream`` (CUDA tensors of the stream's
        device only: host inputs need nothing, and record_stream is per device)."""
        if tensor.is_cuda and tensor.device == stream.device:
            tensor.record_stream(stream)

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: Any, stream: Any, error_mode: str) -> Any:
        """Context manager capturing the work queued on ``stream`` into ``graph``.

        The runner asks for the thread-local error mode, as trtexec captures
        (cudaStreamCaptureModeThreadLocal): CUDA calls of other threads do not break the capture.
        """
        return torch.cuda.graph(graph, stream=stream, capture_error_mode=error_mode)


#: replaced by the test double's device model in the unit tests
CUDA: Any = TorchCuda()


@dataclass(frozen=True)
class GpuIdentity:
    """The GPU an engine is built for or loaded on."""

    name: str
    compute_capability: Tuple[int, int]
    integrated: bool = False  # Jetson / DRIVE (iGPU sharing host memory)

    @property
    def sm(self) -> str:
        """'sm90' for compute capability 9.0."""
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"

    @property
    def embedded(self) -> bool:
        """JetPack / DRIVE OS platform: an integrated GPU, or Orin's / Xavier's sm87 / sm72."""
        return self.integrated or self.compute_capability in ((8, 7), (7, 2))


def current_gpu(device_index: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``device_index``; raises without a CUDA GPU."""
    if not CUDA.is_available():
        raise BackendUnavailableError("no CUDA GPU (torch.cuda.is_available() is False); TensorRT needs one")
    name, capability, integrated = CUDA.properties(device_index)
    return GpuIdentity(name, capability, integrated)


def tensorrt_status() -> Tuple[bool, str]:
    """(usable?, one-line reason): TensorRT importable and new enough, and a CUDA GPU present."""
    try:
        version = require_tensorrt()
        gpu = current_gpu()
    except BackendUnavailableError as exc:
        return False, str(exc)
    return True, f"TensorRT {version} on {gpu.name} ({gpu.sm})"


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Make ``device`` the current CUDA device for the TensorRT calls inside (deserialisation,
    context creation and enqueue all act on the current device)."""
    with CUDA.device(device):
        yield


# --------------------------------------------------------------------------- logging bridge

_LOGGER_CACHE: Dict[int, Any] = {}


def trt_logger() -> "tensorrt.ILogger":
    """A TensorRT logger that forwards to ``logging`` (library code never prints).

    Cached per imported module object: TensorRT keeps a pointer to the logger, so it must outlive
    every builder and runtime made with it. TensorRT calls ``log`` for every message, VERBOSE
    included; messages below the level ``logging`` would keep are dropped before anything else.
    """
    import tensorrt as trt

    cached = _LOGGER_CACHE.get(id(trt))
    if cached is not None:
        return cached
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,  # TensorRT's INFO is build chatter
        severity.VERBOSE: logging.DEBUG,
    }

    class _LoggingBridge(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, sev: "tensorrt.ILogger.Severity", msg: str) -> None:
            level = levels.get(sev, logging.INFO)
            if log.isEnabledFor(level):
                log.log(level, "TensorRT: %s", msg)

    bridge = _LoggingBridge()
    _LOGGER_CACHE[id(trt)] = bridge
    return bridge
