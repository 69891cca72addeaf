"""FakeCuda: the device model behind FakeTensorRT (a test double, NOT CUDA).

It stands in for :class:`rsd_deploy.backends.trt_env.TorchCuda` (the runtime's only way to CUDA)
and checks the rules a real GPU would punish silently, recording each breach in ``violations``
(the ``no_cuda_violations`` fixture fails the test on any):

* **devices**: N pretend GPUs, one current device; allocations remember their device; TensorRT
  work must run with its engine's device current, on buffers of that device.
* **device pointers only**: an address bound to TensorRT must lie inside a live ``empty``/``clone``
  allocation of this model (host tensors are refused).
* **streams**: work queued on a stream stays *pending* until the stream is synchronised
  (``wait_stream`` orders, it does not complete anything).
* **lifetime**: freeing an allocation while a stream other than its allocation stream has pending
  work on it, without ``record_stream`` for that stream, is a use-after-free (the caching allocator
  would hand the block out again); releasing an execution context with work pending is one too.
* **CUDA graphs**: a capture records the enqueues instead of running them, with the context's
  shapes and addresses at that time; replaying after the context was given other shapes or
  addresses is refused (that is not a documented TensorRT pattern); captures must use the
  thread-local error mode; ``fail_capture`` makes ``execute_async_v3`` return False inside one.

Memory is CPU memory (torch CPU tensors), so the fake engine can compute on it.

What it cannot model: real asynchrony (work runs at once, so a missing ``wait_stream`` gives right
numbers here), events, peer access, memory pools, the caching allocator's block reuse itself, and
kernels; only what the runtime passes through the seam is seen.
"""
from __future__ import annotations

import contextlib
import itertools
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch


class FakeStream:
    def __init__(self, cuda: "FakeCuda", device: int, handle: int) -> None:
        self.cuda = cuda
        self.device_index = device
        self.handle = handle
        self.pending: Set[int] = set()  # allocation ids with queued work
        self.pending_contexts: Set[int] = set()
        self.capturing: Optional["FakeGraph"] = None

    @property
    def cuda_stream(self) -> int:
        return self.handle

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.device_index)

    def wait_stream(self, other: "FakeStream") -> None:
        self.cuda.calls.append(("wait_stream", self.handle, other.handle))

    def synchronize(self) -> None:
        self.cuda.calls.append(("synchronize", self.handle))
        self.pending.clear()
        self.pending_contexts.clear()


@dataclass
class _Alloc:
    id: int
    ptr: int
    nbytes: int
    device: int
    stream: FakeStream
    alive: bool = True
    used_on: Set[int] = field(default_factory=set)  # stream handles
    recorded: Set[int] = field(default_factory=set)


class FakeGraph:
    def __init__(self, cuda: "FakeCuda") -> None:
        self.cuda = cuda
        self.ops: List[Tuple[Any, Dict[str, Tuple[int, ...]], Dict[str, int]]] = []
        self.invalid = False
        self.replays = 0

    def replay(self) -> None:
        stream = self.cuda._current_stream()
        self.replays += 1
        for context, shapes, addresses in self.ops:
            if context.shapes != shapes or context.addresses != addresses:
                self.cuda.violate(f"CUDA graph replayed after the context was reconfigured (captured at "
                                  f"{sorted(shapes.items())}, context now at {sorted(context.shapes.items())})")
            context._run_now(stream)


class FakeCuda:
    """Install through ``tests.export.trt_fixtures.install_fake`` (it links FakeTensorRT to it)."""

    def __init__(self, gpus: Sequence[Tuple[str, Tuple[int, int], bool]]) -> None:
        self.gpus = list(gpus)
        self.current = 0
        self.violations: List[str] = []
        self.calls: List[Tuple[Any, ...]] = []
        self._handles = itertools.count(1)
        self._ids = itertools.count(1)
        self.streams: Dict[int, FakeStream] = {}
        self._current_streams: Dict[int, FakeStream] = {}
        for index in range(len(self.gpus)):
            self._current_streams[index] = self._make_stream(index)  # the default stream
        self.allocations: Dict[int, _Alloc] = {}
        self.captures: List[str] = []  # error modes of every capture

    def violate(self, message: str) -> None:
        self.violations.append(message)

    # -- devices
    def is_available(self) -> bool:
        return bool(self.gpus)

    def device_count(self) -> int:
        return len(self.gpus)

    def current_device(self) -> int:
        return self.current

    def properties(self, index: int) -> Tuple[str, Tuple[int, int], bool]:
        return self.gpus[index]

    def _index(self, device: Any) -> int:
        dev = torch.device(device)
        assert dev.type == "cuda", f"FakeCuda got a {dev} device"
        index = self.current if dev.index is None else dev.index
        assert 0 <= index < len(self.gpus), f"no CUDA device {index}"
        return index

    @contextlib.contextmanager
    def device(self, device: Any) -> Iterator[None]:
        previous, self.current = self.current, self._index(device)
        try:
            yield
        finally:
            self.current = previous

    # -- streams
    def _make_stream(self, device: int) -> FakeStream:
        stream = FakeStream(self, device, next(self._handles))
        self.streams[stream.handle] = stream
        return stream

    def new_stream(self, device: Any) -> FakeStream:
        return self._make_stream(self._index(device))

    def current_stream(self, device: Any) -> FakeStream:
        return self._current_streams[self._index(device)]

    def _current_stream(self) -> FakeStream:
        return self._current_streams[self.current]

    @contextlib.contextmanager
    def use_stream(self, stream: FakeStream) -> Iterator[None]:
        # like torch.cuda.stream: the stream's device is current inside
        index = stream.device_index
        previous_stream, previous_device = self._current_streams[index], self.current
        self._current_streams[index], self.current = stream, index
        try:
            yield
        finally:
            self._current_streams[index], self.current = previous_stream, previous_device

    def stream(self, handle: int) -> FakeStream:
        stream = self.streams.get(int(handle))
        if stream is None:
            self.violate(f"work enqueued on unknown stream handle {handle} (not a CUDA stream of this process)")
            stream = self._current_stream()
        return stream

    # -- memory
    def _track(self, tensor: torch.Tensor, device: int) -> torch.Tensor:
        stream = self._current_streams[device]
        alloc = _Alloc(next(self._ids), tensor.data_ptr(), tensor.numel() * tensor.element_size(), device, stream)
        self.allocations[alloc.id] = alloc
        weakref.finalize(tensor, self._freed, alloc.id)
        return tensor

    def empty(self, shape: Sequence[int], dtype: torch.dtype, device: Any) -> torch.Tensor:
        return self._track(torch.empty(tuple(shape), dtype=dtype), self._index(device))

    def to_device(self, tensor: torch.Tensor, device: Any = "cuda:0") -> torch.Tensor:
        """Test helper: ``tensor`` as a 'device' tensor allocated on the current stream."""
        out = self.empty(tensor.shape, tensor.dtype, device)
        out.copy_(tensor)
        return out

    def find(self, tensor_or_ptr: Any) -> Optional[_Alloc]:
        ptr = tensor_or_ptr.data_ptr() if isinstance(tensor_or_ptr, torch.Tensor) else int(tensor_or_ptr)
        for alloc in self.allocations.values():
            if alloc.alive and alloc.ptr <= ptr < alloc.ptr + max(alloc.nbytes, 1):
                return alloc
        return None

    def use(self, alloc: Optional[_Alloc], stream: FakeStream, context: Any = None) -> None:
        if alloc is None:
            return
        if alloc.device != stream.device_index:
            self.violate(f"device {alloc.device} memory used on a stream of device {stream.device_index}")
        alloc.used_on.add(stream.handle)
        stream.pending.add(alloc.id)
        if context is not None:
            stream.pending_contexts.add(id(context))

    def copy_(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        stream = self._current_stream()
        self.use(self.find(dst), stream)
        self.use(self.find(src), stream)
        dst.copy_(src)

    def clone(self, tensor: torch.Tensor) -> torch.Tensor:
        stream = self._current_stream()
        self.use(self.find(tensor), stream)
        alloc = self.find(tensor)
        return self._track(tensor.clone(), alloc.device if alloc else self.current)

    def record_stream(self, tensor: torch.Tensor, stream: FakeStream) -> None:
        alloc = self.find(tensor)
        if alloc is not None:
            alloc.recorded.add(stream.handle)

    def _freed(self, alloc_id: int) -> None:
        alloc = self.allocations.pop(alloc_id)
        alloc.alive = False
        for handle in alloc.used_on:
            stream = self.streams[handle]
            if stream is alloc.stream or handle in alloc.recorded or alloc_id not in stream.pending:
                continue
            self.violate(f"use-after-free: a device-{alloc.device} buffer was freed while stream {handle} still "
                         "had queued work on it (record_stream missing, or no synchronise before freeing)")

    def context_released(self, context_id: int, name: str) -> None:
        for stream in self.streams.values():
            if context_id in stream.pending_contexts:
                self.violate(f"execution context of {name} released while its work on stream {stream.handle} "
                             "was still queued (synchronise before freeing)")

    # -- graphs
    def new_graph(self) -> FakeGraph:
        return FakeGraph(self)

    @contextlib.contextmanager
    def capture(self, graph: FakeGraph, stream: FakeStream, error_mode: str) -> Iterator[None]:
        self.captures.append(error_mode)
        if error_mode != "thread_local":
            self.violate(f"CUDA graph captured with the {error_mode!r} error mode (trtexec uses thread_local)")
        stream.capturing = graph
        try:
            with self.use_stream(stream):
                yield
        finally:
            stream.capturing = None
        if graph.invalid:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
