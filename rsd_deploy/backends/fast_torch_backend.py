"""A fast PyTorch backend for the GPU: low-precision weights, channels-last, one CUDA graph per shape.

Why: at SR 256 the eager UNet is host-bound (kernel launches and Python, GPU_BASELINE.md section
4), so replaying a captured CUDA graph removes most of its cost; fp16/bf16 weights halve memory
traffic and use tensor cores; channels-last suits cuDNN's tensor-core convolutions.

Design, so that it is correct by construction:
* every network call goes through ``GraphCache.run(key, fn, inputs)``; the key holds the stage,
  the input shapes and dtypes, and the step (the timestep and input scale are constants of the
  captured function, so one graph per step). A captured graph reads fixed input buffers and
  writes one fixed output buffer: ``run`` copies the inputs in, replays, and returns a *clone*
  of the output, so a later replay never overwrites a tensor already handed out;
* on the CPU (or with ``cuda_graphs=False``) the same cache runs an eager "capture", which has
  exactly the same buffer semantics; that is what the CPU unit tests exercise;
* the quantiser's distances and argmin stay fp32 (the VQ model computes them in fp32; the latent
  enters the quantiser in fp32, only its output is cast to the weight dtype);
* outputs cross the Backend interface as contiguous NCHW float32, as the interface requires.
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Hashable, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from rsd_deploy.backends.base import Backend, register_backend
from rsd_deploy.errors import BackendUnavailableError, RSDError
from rsd_deploy.models import VQAutoencoder

if TYPE_CHECKING:  # pragma: no cover
    from rsd_deploy.models import Schedule

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class CapturedCall:
    """A replayable call with fixed input and output buffers."""

    static_inputs: Tuple[torch.Tensor, ...]
    static_output: torch.Tensor
    replay: Callable[[], None]


Capture = Callable[[Callable[..., torch.Tensor], Sequence[torch.Tensor]], CapturedCall]


def eager_capture(fn: Callable[..., torch.Tensor], example_inputs: Sequence[torch.Tensor]) -> CapturedCall:
    """Graph-free stand-in with CUDA-graph buffer semantics (CPU, or when graphs are off)."""
    static_inputs = tuple(x.clone() for x in example_inputs)
    static_output = fn(*static_inputs).clone()

    def replay() -> None:
        static_output.copy_(fn(*static_inputs))

    return CapturedCall(static_inputs, static_output, replay)


def make_cuda_graph_capture(pool=None, warmup_iters: int = 2) -> Capture:
    """Capture ``fn`` into a ``torch.cuda.CUDAGraph``; all graphs share one memory pool."""
    shared_pool = pool if pool is not None else torch.cuda.graph_pool_handle()

    def capture(fn: Callable[..., torch.Tensor], example_inputs: Sequence[torch.Tensor]) -> CapturedCall:
        static_inputs = tuple(x.clone() for x in example_inputs)
        # warm up on a side stream: cuDNN autotuning, lazy caches (Swin masks) and allocations happen
        # outside the capture, as torch.cuda.graphs requires
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_iters):
                fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=shared_pool):
            static_output = fn(*static_inputs)
        return CapturedCall(static_inputs, static_output, graph.replay)

    return capture


class GraphCache:
    """One captured call per key (stage, shapes, dtypes, step), least recently used evicted."""

    def __init__(self, capture: Capture, max_entries: int = 32) -> None:
        self._capture = capture
        self._entries: "OrderedDict[Hashable, CapturedCall]" = OrderedDict()
        self.max_entries = max_entries
        self.captures = 0
        self.replays = 0

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self):
        return list(self._entries)

    def run(self, key: Hashable, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._capture(fn, inputs)
            self.captures += 1
            self._entries[key] = entry
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        if len(entry.static_inputs) != len(inputs):
            raise RSDError(f"graph {key!r}: expected {len(entry.static_inputs)} inputs, got {len(inputs)}")
        for buf, x in zip(entry.static_inputs, inputs):
            buf.copy_(x)
        entry.replay()
        self.replays += 1
        return entry.static_output.clone()


def shape_key(stage: str, step: Optional[int], tensors: Sequence[Optional[torch.Tensor]]) -> tuple:
    return (stage, step) + tuple(None if t is None else (tuple(t.shape), str(t.dtype)) for t in tensors)


def _prepare(module: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> nn.Module:
    """A private copy of ``module`` on ``device`` in ``dtype`` (the caller's module is not touched)."""
    m = copy.deepcopy(module).eval().to(device=device, dtype=dtype)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@dataclass
class FastTorchOptions:
    """How to run the models fast.

    unet / vq / schedule: as TorchOptions (private copies of the models are made). device: cuda
    (default), cuda:N or cpu. precision: fp16 (default, CUDA only), bf16 or fp32 weights.
    channels_last: NHWC memory format (default True). cuda_graphs: None (default) = on with CUDA,
    off on the CPU, where the same code path runs eagerly. compile_mode: wrap each network call in
    ``torch.compile`` before capture (e.g. ``"max-autotune-no-cudagraphs"``; slow first call).
    capture: a custom capture function (tests).
    """

    unet: nn.Module
    vq: nn.Module
    schedule: "Schedule"
    device: Union[str, torch.device] = "cuda"
    precision: str = "fp16"
    channels_last: bool = True
    cuda_graphs: Optional[bool] = None
    compile_mode: Optional[str] = None
    capture: Optional[Capture] = None


@register_backend("torch-fast")
class FastTorchBackend(Backend):
    """PyTorch backend for speed: fp16/bf16 weights, channels-last, CUDA graph per shape and step
    (see FastTorchOptions)."""

    name = "torch-fast"
    Options = FastTorchOptions

    def __init__(self, options: FastTorchOptions) -> None:
        unet, vq, schedule, precision = options.unet, options.vq, options.schedule, options.precision
        channels_last, cuda_graphs, compile_mode, capture = (options.channels_last, options.cuda_graphs,
                                                             options.compile_mode, options.capture)
        self._device = torch.device(options.device)
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch-fast: CUDA requested but not available; use --device cpu")
        if precision not in DTYPES:
            raise RSDError(f"torch-fast: unknown precision {precision!r}; use fp32, fp16 or bf16")
        if precision == "fp16" and self._device.type != "cuda":
            raise BackendUnavailableError("torch-fast: fp16 needs CUDA; use fp32 or bf16 on the CPU")
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.channels_last = channels_last
        if cuda_graphs is None:
            cuda_graphs = self._device.type == "cuda"
        if cuda_graphs and self._device.type != "cuda":
            raise BackendUnavailableError("torch-fast: CUDA graphs need a CUDA device")
        self.cuda_graphs = cuda_graphs
        if capture is None:
            capture = make_cuda_graph_capture() if cuda_graphs else eager_capture
        self.graphs = GraphCache(capture)
        self.unet = _prepare(unet, self._device, self.dtype, channels_last)
        self.vq = _prepare(vq, self._device, self.dtype, channels_last)
        self.vq.quantize.float()  # type: ignore[operator]  # the codebook stays fp32 (distances are fp32 anyway)
        self.noise_channels = int(getattr(getattr(unet, "config", None), "noise_channels", 0))
        self.schedule = schedule
        self.eta = [float(e) for e in schedule.eta]
        self._wrap = (lambda f: torch.compile(f, mode=compile_mode)) if compile_mode else (lambda f: f)
        self._fns: dict = {}

    @property
    def device(self) -> torch.device:
        return self._device

    # -- helpers -------------------------------------------------------------------------------
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def _output(y: torch.Tensor) -> torch.Tensor:
        return y.float().contiguous()

    def _fn(self, key: Hashable, build: Callable[[], Callable[..., torch.Tensor]]) -> Callable[..., torch.Tensor]:
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = self._wrap(build())
        return fn

    def input_scale(self, step: int) -> float:
        """1 / sqrt(kappa^2 eta_step + 1): the UNet input scaling of ResShift."""
        if not 0 <= step < len(self.eta):
            raise RSDError(f"step {step} outside the schedule (0..{len(self.eta) - 1})")
        return self.schedule.input_scale(step)  # the one formula (Schedule), same float64 value

    # -- Backend -------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        dtype, vq = self.dtype, self.vq

        def build():
            return lambda img: vq.encode(img.to(dtype)).float()

        x = self._input(image)
        return self._output(self.graphs.run(shape_key("encode", None, [x]), self._fn("encode", build), [x]))

    @torch.inference_mode()
    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        if (noise is None) != (self.noise_channels == 0):
            raise RSDError(f"torch-fast: this UNet takes noise_channels={self.noise_channels}; "
                           + ("pass the RSD noise map" if self.noise_channels else "pass no noise"))
        scale, dtype, unet, device = self.input_scale(step), self.dtype, self.unet, self._device

        def build():
            def call(z: torch.Tensor, lq_: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
                t = torch.full((z.shape[0],), step, dtype=torch.int64, device=device)
                n = extra[0].to(dtype) if extra else None
                return unet((z * scale).to(dtype), t, lq_.to(dtype), n).float()
            return call

        inputs = [self._input(z_t), self._input(lq)] + ([self._input(noise)] if noise is not None else [])
        out = self.graphs.run(shape_key("denoise", step, inputs), self._fn(("denoise", step), build), inputs)
        return self._output(out)

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        dtype, vq = self.dtype, self.vq
        assert isinstance(vq, VQAutoencoder)

        def build():
            def call(latent: torch.Tensor) -> torch.Tensor:
                z_q, _ = vq.quantize_latent(latent.float())  # fp32 distances and argmin
                return vq.decode(z_q.to(dtype), quantize=False).float()
            return call

        x = self._input(z)
        return self._output(self.graphs.run(shape_key("decode", None, [x]), self._fn("decode", build), [x]))

    def close(self) -> None:
        self.graphs = GraphCache(eager_capture)
        self._fns.clear()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
