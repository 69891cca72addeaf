"""The TensorRT runtime: deserialise a plan on the right GPU and run it (:class:`EngineRunner`).

Rules this follows, each from NVIDIA's sources:

* Deserialisation, context creation and every enqueue happen with the runner's device current
  (TensorRT acts on the current CUDA device; with ``cuda:1`` an engine deserialised while device 0
  is current lands on device 0).
* Version-compatible plans need ``engine_host_code_allowed``; plans built with
  ``EXCLUDE_LEAN_RUNTIME`` must be deserialised by a lean runtime loaded with ``load_runtime(path)``
  (trtexec: samples/common/sampleEngines.cpp, ``LazilyDeserializedEngine::get``).
* Every I/O tensor gets an address before ``execute_async_v3`` (a missing one fails the enqueue).
* Work runs on a private stream ordered after the caller's stream. Buffers are allocated while the
  private stream is current (the caching allocator then ties them to it); the caller's input
  tensors, read on the private stream, are ``record_stream``-ed, and the output buffers, read on
  the caller's stream, too. ``close()`` synchronises before it releases buffers and the context.
* CUDA graphs: one graph, for the shapes bound now. A shape change drops it, runs once plainly
  (TensorRT finishes deferred setup outside any capture) and captures again; a graph is never
  replayed after the context ran other shapes (demo/Diffusion refuses graphs with dynamic shapes;
  re-capturing is what export/cpp does). Capture uses the thread-local error mode (trtexec); a
  failed capture, ``execute_async_v3`` returning False included, falls back to plain runs.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from rsd_deploy.backends import trt_env
from rsd_deploy.backends.trt_env import on_device, require_tensorrt, trt_logger
from rsd_deploy.backends.trt_plans import PlanRuntime
from rsd_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError, RSDError, ShapeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorrt

log = logging.getLogger(__name__)

ShapeKey = Tuple[Tuple[int, ...], ...]
PathLike = Union[str, Path]


def lean_runtime_library(built_with: str) -> str:
    """File name of the lean runtime library of the TensorRT major version that built a plan
    (found on the library search path; pass a full path to use another)."""
    major = trt_env.parse_version(built_with or "0")[:1] or (0,)
    return f"nvinfer_lean_{major[0]}.dll" if sys.platform == "win32" else f"libnvinfer_lean.so.{major[0]}"


def make_runtime(needs: PlanRuntime = PlanRuntime(),
                 lean_runtime: Optional[PathLike] = None) -> Tuple[List[Any], "tensorrt.Runtime"]:
    """(runtimes to keep alive, the runtime that deserialises a plan with ``needs``)."""
    require_tensorrt()
    import tensorrt as trt

    runtime = trt.Runtime(trt_logger())
    keep: List[Any] = [runtime]
    if needs.lean_runtime:
        path = str(lean_runtime or lean_runtime_library(needs.built_with))
        lean = runtime.load_runtime(path)
        if lean is None:
            raise BackendUnavailableError(
                f"the plan was built without the lean runtime (EXCLUDE_LEAN_RUNTIME) and TensorRT could not load "
                f"the lean runtime {path}; install TensorRT {needs.built_with}'s lean runtime there or rebuild "
                "without exclude_lean_runtime"
            )
        keep.append(lean)
        runtime = lean
    if needs.host_code:
        # version-compatible plans: opt in to the host code of the lean runtime they carry
        runtime.engine_host_code_allowed = True
    return keep, runtime


def deserialize(plan: bytes, needs: PlanRuntime = PlanRuntime(),
                lean_runtime: Optional[PathLike] = None) -> Tuple[List[Any], "tensorrt.ICudaEngine"]:
    """(runtimes to keep alive, engine) on the *current* CUDA device; EngineMismatchError if refused."""
    keep, runtime = make_runtime(needs, lean_runtime)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineMismatchError(
            "TensorRT could not deserialise the engine (other TensorRT version, GPU or a corrupt file); "
            "rebuild it with `rsd-export --build-engine DIR`"
        )
    return keep, engine


def torch_dtype(trt_dtype: "tensorrt.DataType") -> torch.dtype:
    import tensorrt as trt

    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
        "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool,
    }
    for name, dtype in table.items():
        if getattr(trt.DataType, name, None) == trt_dtype:
            return dtype
    raise BackendUnavailableError(f"engine tensor data type {trt_dtype} has no torch equivalent")


def dims(value: "tensorrt.Dims") -> Tuple[int, ...]:
    """trt.Dims -> tuple (Dims supports len/[] on every version; iteration is not in the stubs)."""
    return tuple(int(value[i]) for i in range(len(value)))


class _CaptureFailed(RSDError):
    """execute_async_v3 returned False while a CUDA graph was being captured."""


class EngineRunner:
    """One deserialised engine on one CUDA device, one execution context, buffers per input shape.

    ``run`` takes and returns ``torch.Tensor`` (NCHW); inputs may live anywhere, outputs are new
    tensors on ``device``. See the module docstring for streams, lifetime and CUDA graphs.
    """

    def __init__(self, plan: bytes, device: torch.device, *, name: str = "engine",
                 needs: PlanRuntime = PlanRuntime(), lean_runtime: Optional[PathLike] = None,
                 cuda_graphs: bool = False) -> None:
        require_tensorrt()
        import tensorrt as trt

        if device.type != "cuda" or device.index is None:
            raise ConfigError(f"{name}: TensorRT engines run on a CUDA device cuda:N, not {device}")
        self.name = name
        self.device = device
        self.cuda_graphs = bool(cuda_graphs)
        self._buffers: Dict[ShapeKey, Dict[str, torch.Tensor]] = {}
        self._graph: Optional[Any] = None  # captured for self._bound only
        self._bound: Optional[ShapeKey] = None
        with on_device(device):
            self._runtimes, self.engine = deserialize(plan, needs, lean_runtime)
            context = self.engine.create_execution_context()
            if context is None:
                raise BackendUnavailableError(
                    f"{name}: TensorRT could not create an execution context (out of GPU memory?)"
                )
            self.context = context
            self._stream = trt_env.CUDA.new_stream(device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}

    @property
    def device_memory_bytes(self) -> int:
        """Scratch memory of the context (``_v2`` on 11.x, where the old property is gone)."""
        if hasattr(self.engine, "device_memory_size_v2"):
            return int(self.engine.device_memory_size_v2)
        return int(self.engine.device_memory_size)

    def profile_shapes(self, name: str) -> Tuple[Tuple[int, ...], ...]:
        """(min, opt, max) shapes of input ``name`` in optimisation profile 0."""
        return tuple(dims(d) for d in self.engine.get_tensor_profile_shape(name, 0))

    def _set_shapes(self, key: ShapeKey) -> None:
        import tensorrt as trt

        for name, shape in zip(self.input_names, key):
            if not self.context.set_input_shape(name, trt.Dims(list(shape))):
                low, _, high = self.profile_shapes(name)
                raise ShapeError(
                    f"{self.name}: input {name} shape {tuple(shape)} is outside the engine profile "
                    f"{low}..{high}; rebuild with a wider --min-shape/--max-shape or tile the image"
                )

    def _allocate(self, key: ShapeKey) -> Dict[str, torch.Tensor]:
        """Buffers for ``key``, allocated while the private stream is current (caller holds it)."""
        self._set_shapes(key)
        self._bound = None  # the context now holds key's shapes but not its addresses
        self._graph = None
        buffers: Dict[str, torch.Tensor] = {}
        for name, shape in zip(self.input_names, key):
            buffers[name] = trt_env.CUDA.empty(shape, self.dtypes[name], self.device)
        for name in self.output_names:
            shape = dims(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ShapeError(f"{self.name}: output {name} has unresolved shape {shape}; re-export the graph")
            buffers[name] = trt_env.CUDA.empty(shape, self.dtypes[name], self.device)
        self._buffers[key] = buffers
        return buffers

    def _bind(self, key: ShapeKey, buffers: Mapping[str, torch.Tensor]) -> None:
        """Input shapes plus an address for every I/O tensor; the graph of other shapes is dropped."""
        self._graph = None
        self._set_shapes(key)
        for name in self.input_names + self.output_names:
            if not self.context.set_tensor_address(name, buffers[name].data_ptr()):
                raise RSDError(f"{self.name}: TensorRT rejected the address of tensor {name}")
        self._bound = key

    def _execute(self) -> bool:
        return bool(self.context.execute_async_v3(self._stream.cuda_stream))

    def _launch(self) -> None:
        if self._graph is not None:
            self._graph.replay()
            return
        if not self._execute():  # plain run first: TensorRT finishes deferred setup outside any capture
            raise RSDError(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        if self.cuda_graphs:
            self._capture()

    def _capture(self) -> None:
        graph = trt_env.CUDA.new_graph()
        try:
            with trt_env.CUDA.capture(graph, self._stream, "thread_local"):
                if not self._execute():
                    raise _CaptureFailed(f"{self.name}: execute_async_v3 returned False during capture")
        except (RuntimeError, _CaptureFailed) as exc:  # e.g. plans whose enqueue synchronises
            log.warning("%s: CUDA graph capture failed (%s); running without CUDA graphs", self.name, exc)
            self.cuda_graphs = False
            return
        self._graph = graph

    def run(self, feeds: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Run the engine on ``feeds`` {input name: tensor}; returns {output name: new tensor}."""
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise ShapeError(
                f"{self.name}: engine inputs are {self.input_names}, got {sorted(feeds)}; "
                "the engine does not match this pipeline, rebuild it with `rsd-export --build-engine DIR`"
            )
        key: ShapeKey = tuple(tuple(int(d) for d in feeds[n].shape) for n in self.input_names)
        cuda = trt_env.CUDA
        with on_device(self.device):
            caller = cuda.current_stream(self.device)
            self._stream.wait_stream(caller)  # inputs were produced on the caller's stream
            with cuda.use_stream(self._stream):
                buffers = self._buffers.get(key) or self._allocate(key)
                for name in self.input_names:
                    cuda.copy_(buffers[name], feeds[name])
                    cuda.record_stream(feeds[name], self._stream)  # the caller's tensor, read here
                if self._bound != key:
                    self._bind(key, buffers)
                self._launch()
            caller.wait_stream(self._stream)
            outputs = {}
            for name in self.output_names:  # buffers are reused next call: hand out copies
                cuda.record_stream(buffers[name], caller)
                outputs[name] = cuda.clone(buffers[name])
            return outputs

    def __del__(self) -> None:  # dropped without close(): still never free under queued work
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing left to report to
            pass

    def close(self) -> None:
        """Wait for queued work, then release graph, buffers, context and engine (reverse order)."""
        stream = getattr(self, "_stream", None)
        if stream is not None:
            with on_device(self.device):
                stream.synchronize()
        self._graph = None
        self._buffers.clear()
        self._bound = None
        for attr in ("context", "engine", "_runtimes"):
            if hasattr(self, attr):
                delattr(self, attr)
