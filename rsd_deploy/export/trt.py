"""The one module that calls TensorRT: engine build, engine inspection and runtime helpers.

``tensorrt`` is imported lazily inside each function, so ``import rsd_deploy`` and every CLI work
without it. One strongly typed code path serves TensorRT 10.12+ (the Jetson/edge lane) and 11.x;
where the two differ we branch on ``hasattr`` instead of on version numbers:

* ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` must be set on 10.x; on 11.x every network is
  strongly typed and the flag is ignored or gone, so it is set only when it exists.
* ``ICudaEngine.device_memory_size`` was removed in 11; ``device_memory_size_v2`` exists on both.
* The inspector's JSON lists engine I/O under ``"Bindings"`` (10.x) or ``"I/O Tensors"`` (11.x).
* Precision comes only from the ONNX graph (Casts, Q/DQ); no FP16/INT8 builder flag is ever set.

Engines with dynamic shapes report tensor formats as "N/A due to dynamic shapes" unless the
inspector is given an execution context whose input shapes are set: :func:`inspect_plan` does so.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from rsd_deploy.errors import (
    BackendUnavailableError,
    EngineMismatchError,
    EnginePrecisionError,
    ExportError,
    RSDError,
    ShapeError,
)
from rsd_deploy.fileio import atomic_write_bytes  # noqa: F401 (engine_build uses trt.atomic_write_bytes)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorrt

log = logging.getLogger(__name__)

Shape4 = Tuple[int, int, int, int]

#: oldest TensorRT with a usable strongly typed ONNX path (weak typing deprecated in 10.12)
MIN_TENSORRT = (10, 12)
INSTALL_HINT = "pip install rsd-deploy[trt]"


# --------------------------------------------------------------------------- availability


def parse_version(version: str) -> Tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); non-numeric parts end the tuple."""
    parts: List[int] = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def _require_tensorrt() -> str:
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
    return _require_tensorrt()


@dataclass(frozen=True)
class GpuIdentity:
    """The GPU an engine is built for or loaded on (from torch.cuda, no cuda-python needed)."""

    name: str
    compute_capability: Tuple[int, int]

    @property
    def sm(self) -> str:
        """'sm90' for compute capability 9.0."""
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


def current_gpu(device_index: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``device_index``; raises without a CUDA GPU."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError("no CUDA GPU (torch.cuda.is_available() is False); TensorRT needs one")
    major, minor = torch.cuda.get_device_capability(device_index)
    return GpuIdentity(torch.cuda.get_device_name(device_index), (int(major), int(minor)))


def tensorrt_status() -> Tuple[bool, str]:
    """(usable?, one-line reason): TensorRT importable and new enough, and a CUDA GPU present."""
    try:
        version = _require_tensorrt()
        gpu = current_gpu()
    except BackendUnavailableError as exc:
        return False, str(exc)
    return True, f"TensorRT {version} on {gpu.name} ({gpu.sm})"


# --------------------------------------------------------------------------- logging bridge

_LOGGER_CACHE: Dict[int, Any] = {}


def _trt_logger() -> "tensorrt.ILogger":
    """A TensorRT logger that forwards to ``logging`` (library code never prints).

    Cached per imported module object: TensorRT keeps a pointer to the logger, so it must outlive
    every builder and runtime made with it.
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
            log.log(levels.get(sev, logging.INFO), "TensorRT: %s", msg)

    bridge = _LoggingBridge()
    _LOGGER_CACHE[id(trt)] = bridge
    return bridge


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildSettings:
    """Everything besides the ONNX that changes a plan; all of it goes into the engine cache key.

    ``profile`` maps each graph input name to full NCHW (min, opt, max) shapes.
    """

    profile: Mapping[str, Tuple[Shape4, Shape4, Shape4]]
    workspace_bytes: int = 4 << 30
    optimization_level: int = 3
    tf32: bool = False  # off by default so an "fp32" engine is fp32 (TensorRT enables TF32 itself)
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatible: bool = False  # AMPERE_PLUS: runs on any sm80+ GPU, slower tactics

    def to_key(self) -> Dict[str, Any]:
        """JSON-ready description used in cache keys and sidecars."""
        return {
            "profile": {name: [list(s) for s in shapes] for name, shapes in sorted(self.profile.items())},
            "workspace_bytes": int(self.workspace_bytes),
            "optimization_level": int(self.optimization_level),
            "tf32": bool(self.tf32),
            "version_compatible": bool(self.version_compatible),
            "exclude_lean_runtime": bool(self.exclude_lean_runtime),
            "hardware_compatible": bool(self.hardware_compatible),
        }


def _network_flags() -> int:
    import tensorrt as trt

    # 10.x: strong typing must be requested; 11.x: always strongly typed (flag ignored or removed)
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _builder_flag(name: str) -> "tensorrt.BuilderFlag":
    import tensorrt as trt

    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise BackendUnavailableError(
            f"this TensorRT ({trt.__version__}) has no BuilderFlag.{name}; drop the option that needs it"
        )
    return flag


def build_serialized_engine(
    onnx_path: Path, settings: BuildSettings, timing_cache_path: Optional[Path] = None
) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized plan.

    The timing cache at ``timing_cache_path`` (keyed by GPU + TensorRT version by the caller) is
    loaded when present and saved back after a successful build.
    Raises ExportError when parsing or building fails, with TensorRT's own messages.
    """
    _require_tensorrt()
    import tensorrt as trt

    logger = _trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT could not parse {onnx_path.name}: {' | '.join(errors) or 'no parser message'}; "
            f"check the graph with `polygraphy check lint {onnx_path}`"
        )

    graph_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(graph_inputs) != sorted(settings.profile):
        raise ExportError(
            f"{onnx_path.name} has inputs {graph_inputs} but the export spec profiles "
            f"{sorted(settings.profile)}; re-export the graph with rsd-export"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_bytes))
    config.builder_optimization_level = int(settings.optimization_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer dtypes for the inspector
    if settings.tf32:
        config.set_flag(_builder_flag("TF32"))
    else:
        config.clear_flag(_builder_flag("TF32"))
    if settings.version_compatible:
        config.set_flag(_builder_flag("VERSION_COMPATIBLE"))
        if settings.exclude_lean_runtime:
            config.set_flag(_builder_flag("EXCLUDE_LEAN_RUNTIME"))
    if settings.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS

    profile = builder.create_optimization_profile()
    for name, (smallest, optimal, largest) in settings.profile.items():
        profile.set_shape(name, trt.Dims(list(smallest)), trt.Dims(list(optimal)), trt.Dims(list(largest)))
    config.add_optimization_profile(profile)

    cache_bytes = b""
    if timing_cache_path is not None and timing_cache_path.is_file():
        cache_bytes = timing_cache_path.read_bytes()
        log.info("timing cache: loaded %s (%d bytes)", timing_cache_path.name, len(cache_bytes))
    timing_cache = config.create_timing_cache(cache_bytes)
    if timing_cache is None or not config.set_timing_cache(timing_cache, False):
        log.warning("timing cache %s was rejected; building without it", timing_cache_path)
        timing_cache = config.create_timing_cache(b"")
        config.set_timing_cache(timing_cache, False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log); "
            "if it could not find an implementation, lower --max-shape or raise the workspace"
        )
    if timing_cache_path is not None:
        atomic_write_bytes(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


# --------------------------------------------------------------------------- inspection

_BOOKKEEPING_LAYERS = {"Reformat", "NoOp", "Constant", "Shuffle", "Identity"}
_INT8 = re.compile(r"\bint8\b", re.IGNORECASE)
_HALF = re.compile(r"\b(fp16|half)\b", re.IGNORECASE)
_BF16 = re.compile(r"\bbf16\b", re.IGNORECASE)
_FLOAT = re.compile(r"\b(fp32|float)\b", re.IGNORECASE)


@dataclass(frozen=True)
class LayerPrecisionSummary:
    """How many compute layers of an engine run in each precision (from the inspector JSON)."""

    layers: int
    half: int = 0
    int8: int = 0
    bf16: int = 0
    float32: int = 0
    unknown: int = 0
    io_tensors: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def half_share(self) -> float:
        """Fraction of classified compute layers that run in fp16."""
        known = self.layers - self.unknown
        return self.half / known if known else 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "layers": self.layers, "half": self.half, "int8": self.int8, "bf16": self.bf16,
            "float32": self.float32, "unknown": self.unknown, "half_share": round(self.half_share, 4),
        }


def _layer_precision(layer: Mapping[str, Any]) -> str:
    formats = [
        str(t.get("Format/Datatype", t.get("Format", "")))
        for t in list(layer.get("Inputs", ())) + list(layer.get("Outputs", ()))
        if isinstance(t, Mapping)
    ]
    text = " ".join(formats)
    # int8 first: an int8 conv reads int8 and may write half or float
    for label, pattern in (("int8", _INT8), ("half", _HALF), ("bf16", _BF16), ("float32", _FLOAT)):
        if pattern.search(text):
            return label
    return "unknown"


def summarize_layer_precisions(engine_information_json: str) -> LayerPrecisionSummary:
    """Count compute layers per precision in ``EngineInspector.get_engine_information(JSON)``.

    Reformat/NoOp/Constant/Shuffle layers are bookkeeping and not counted. Handles both the 10.x
    ("Bindings") and 11.x ("I/O Tensors") top-level keys.
    """
    info = json.loads(engine_information_json)
    layers = info.get("Layers", []) if isinstance(info, Mapping) else []
    io_list = info.get("I/O Tensors", info.get("Bindings", [])) if isinstance(info, Mapping) else []
    counts = {"half": 0, "int8": 0, "bf16": 0, "float32": 0, "unknown": 0}
    total = 0
    for layer in layers:
        if not isinstance(layer, Mapping):  # LAYER_NAMES_ONLY verbosity gives plain strings
            counts["unknown"] += 1
            total += 1
            continue
        if layer.get("LayerType") in _BOOKKEEPING_LAYERS:
            continue
        counts[_layer_precision(layer)] += 1
        total += 1
    return LayerPrecisionSummary(layers=total, io_tensors=tuple(str(n) for n in io_list), **counts)


def check_engine_precision(
    summary: LayerPrecisionSummary, precision: str, engine_name: str, min_half_share: float = 0.1
) -> None:
    """Fail loudly when an engine did not keep the precision its ONNX graph asked for.

    TensorRT 11 silently builds fp32 layers when the graph's Casts/Q/DQ are lost, so an "fp16"
    engine with almost no half layers or an "int8" engine without int8 layers is an error.
    """
    known = summary.layers - summary.unknown
    if precision in ("fp16", "int8") and known == 0:
        raise EnginePrecisionError(
            f"{engine_name}: the engine inspector reported no layer data types ({summary.layers} layers), "
            "so its precision cannot be checked; rebuild with profiling verbosity DETAILED"
        )
    if precision == "fp16" and summary.half_share < min_half_share:
        raise EnginePrecisionError(
            f"{engine_name}: 'fp16' engine has only {summary.half}/{known} half-precision layers "
            f"({summary.half_share:.0%} < {min_half_share:.0%}), TensorRT built it in fp32; "
            "re-export the FP16 graph (rsd-export --fp16) and check that its Casts survived"
        )
    if precision == "int8" and summary.int8 == 0:
        raise EnginePrecisionError(
            f"{engine_name}: 'int8' engine has no int8 layers ({known} layers), TensorRT ignored the Q/DQ "
            "nodes; re-export the INT8 graph (rsd-export --int8) and check its QuantizeLinear zero points are 0"
        )


def inspect_plan(plan: bytes, input_shapes: Mapping[str, Sequence[int]]) -> LayerPrecisionSummary:
    """Deserialize ``plan`` on the GPU and summarise layer precisions at ``input_shapes``."""
    _require_tensorrt()
    import tensorrt as trt

    runtime, engine = _deserialize(plan, allow_host_code=True)
    context = engine.create_execution_context()
    if context is None:
        raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
    for name, shape in input_shapes.items():
        context.set_input_shape(name, trt.Dims(list(shape)))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context  # dynamic shapes: formats are 'N/A' without a context
    summary = summarize_layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    del inspector, context, engine, runtime
    return summary


# --------------------------------------------------------------------------- runtime


def make_runtime(allow_host_code: bool = False) -> "tensorrt.Runtime":
    """A TensorRT runtime logging through ``logging``; ``allow_host_code`` for version-compatible
    plans that embed the lean runtime (they carry host code)."""
    _require_tensorrt()
    import tensorrt as trt

    runtime = trt.Runtime(_trt_logger())
    if allow_host_code:
        runtime.engine_host_code_allowed = True
    return runtime


def _deserialize(plan: bytes, allow_host_code: bool = False) -> Tuple["tensorrt.Runtime", "tensorrt.ICudaEngine"]:
    runtime = make_runtime(allow_host_code)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineMismatchError(
            "TensorRT could not deserialise the engine (other TensorRT version, GPU or a corrupt file); "
            "rebuild it with `rsd-export --build-engine DIR`"
        )
    return runtime, engine


def _torch_dtype(trt_dtype: "tensorrt.DataType") -> torch.dtype:
    import tensorrt as trt

    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
        "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool,
    }
    for name, dtype in table.items():
        if getattr(trt.DataType, name, None) == trt_dtype:
            return dtype
    raise BackendUnavailableError(f"engine tensor data type {trt_dtype} has no torch equivalent")


ShapeKey = Tuple[Tuple[int, ...], ...]


def _dims(dims: "tensorrt.Dims") -> Tuple[int, ...]:
    """trt.Dims -> tuple (Dims supports len/[] on every version; iteration is not in the stubs)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


class EngineRunner:
    """One deserialised engine with one execution context and buffers allocated once per shape.

    ``run`` takes and returns ``torch.Tensor`` (NCHW); inputs may live anywhere, outputs are new
    tensors on ``device``. On CUDA, work runs on a private torch stream ordered against the caller's
    current stream (no host synchronisation). With ``cuda_graphs`` the first call at a new shape
    runs plainly and is then captured; later calls at that shape replay the graph.
    """

    def __init__(self, plan: bytes, device: torch.device, *, name: str = "engine",
                 allow_host_code: bool = False, cuda_graphs: bool = False) -> None:
        _require_tensorrt()
        import tensorrt as trt

        self.name = name
        self.device = device
        self._runtime, self.engine = _deserialize(plan, allow_host_code=allow_host_code)
        context = self.engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(
                f"{name}: TensorRT could not create an execution context (out of GPU memory?)"
            )
        self.context = context
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.cuda_graphs = bool(cuda_graphs) and device.type == "cuda"
        self._stream: Optional[torch.cuda.Stream] = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._buffers: Dict[ShapeKey, Dict[str, torch.Tensor]] = {}
        self._graphs: Dict[ShapeKey, torch.cuda.CUDAGraph] = {}
        self._bound: Optional[ShapeKey] = None

    @property
    def device_memory_bytes(self) -> int:
        """Scratch memory of the context (``_v2`` on 11.x, where the old property is gone)."""
        if hasattr(self.engine, "device_memory_size_v2"):
            return int(self.engine.device_memory_size_v2)
        return int(self.engine.device_memory_size)

    def profile_shapes(self, name: str) -> Tuple[Tuple[int, ...], ...]:
        """(min, opt, max) shapes of input ``name`` in optimisation profile 0."""
        return tuple(_dims(dims) for dims in self.engine.get_tensor_profile_shape(name, 0))

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
        self._set_shapes(key)
        buffers: Dict[str, torch.Tensor] = {}
        for name, shape in zip(self.input_names, key):
            buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
        for name in self.output_names:
            shape = _dims(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ShapeError(f"{self.name}: output {name} has unresolved shape {shape}; re-export the graph")
            buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
        self._buffers[key] = buffers
        self._bound = None
        return buffers

    def _bind(self, key: ShapeKey, buffers: Mapping[str, torch.Tensor]) -> None:
        """Input shapes plus an address for every I/O tensor (a missing one is undefined behaviour)."""
        self._set_shapes(key)
        for name in self.input_names + self.output_names:
            if not self.context.set_tensor_address(name, buffers[name].data_ptr()):
                raise RSDError(f"{self.name}: TensorRT rejected the address of tensor {name}")
        self._bound = key

    def _execute(self) -> None:
        handle = self._stream.cuda_stream if self._stream is not None else 0
        if not self.context.execute_async_v3(handle):
            raise RSDError(f"{self.name}: TensorRT execution failed (see the TensorRT log)")

    def _launch(self, key: ShapeKey) -> None:
        graph = self._graphs.get(key)
        if graph is not None:
            graph.replay()
            return
        self._execute()  # plain run first: TensorRT finishes deferred setup outside any capture
        if not self.cuda_graphs:
            return
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._execute()
            self._graphs[key] = graph
        except RuntimeError as exc:  # some plans (e.g. with host code) cannot be captured
            log.warning("%s: CUDA graph capture failed (%s); running without CUDA graphs", self.name, exc)
            self.cuda_graphs = False

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
        buffers = self._buffers.get(key) or self._allocate(key)
        if self._stream is None:
            return self._run_on(key, buffers, feeds)
        caller = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(caller)  # inputs were produced on the caller's stream
        with torch.cuda.stream(self._stream):
            self._run_on(key, buffers, feeds, copy_outputs=False)
        caller.wait_stream(self._stream)
        return {n: buffers[n].clone() for n in self.output_names}  # buffers are reused next call

    def _run_on(self, key: ShapeKey, buffers: Mapping[str, torch.Tensor], feeds: Mapping[str, torch.Tensor],
                copy_outputs: bool = True) -> Dict[str, torch.Tensor]:
        for name in self.input_names:
            buffers[name].copy_(feeds[name], non_blocking=True)
        if self._bound != key:
            self._bind(key, buffers)
        self._launch(key)
        return {n: buffers[n].clone() for n in self.output_names} if copy_outputs else {}

    def close(self) -> None:
        """Release graphs, buffers, context and engine (in reverse order of creation)."""
        self._graphs.clear()
        self._buffers.clear()
        self._bound = None
        for attr in ("context", "engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
