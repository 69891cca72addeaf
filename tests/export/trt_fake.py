"""FakeTensorRT: a recording test double of the small ``tensorrt`` surface rsd-deploy uses.

THIS IS NOT TENSORRT. It records every call (``fake.calls``) so tests can assert the build
recipe and the runtime protocol, and it refuses what real TensorRT (10.12+ or 11.x) refuses where
rsd-deploy could get it wrong. Passing tests with it prove the wrapper logic, never that real
engines build or run: ``tests/gpu`` does that.

A "plan" is a JSON description of the build pointing at the ONNX file; "executing" it runs that
ONNX with ONNX Runtime on the memory behind the addresses the code bound. Memory, devices,
streams and CUDA graphs come from :class:`tests.export.cuda_fake.FakeCuda` (device pointers only,
stream/lifetime tracking, current device).

Two flavours. ``flavour="10"``: the STRONGLY_TYPED creation flag and the FP16/INT8/BF16 builder
flags exist, and a build of a strongly typed network with a precision flag fails (as 10.x does);
``device_memory_size`` exists; the inspector lists ``"Bindings"`` (names) and each layer tensor's
``"Format/Datatype"`` text. ``flavour="11"``: no STRONGLY_TYPED flag (always strongly typed), no
precision flags, only ``device_memory_size_v2``, ``"I/O Tensors"`` as objects, and the layer
tensor text split into ``"Format"`` and ``"DataType"`` (NVIDIA's 10.x -> 11.x inspector
migration notes).

Faithful where rsd-deploy could go wrong:
* the inspector fuses Q -> DQ -> Conv into one int8 ``CaskConvolution`` layer; a Q/DQ pair that
  feeds no convolution stays as int8 ``Scale`` layers;
* version-compatible plans deserialise only with ``engine_host_code_allowed``; plans built with
  ``EXCLUDE_LEAN_RUNTIME`` only through a lean runtime from ``load_runtime(path)`` of the version
  that built them (``fake.lean_libraries``); other plans only on the exact version and GPU;
  hardware-compatible plans on sm80+ discrete GPUs only;
* timing caches carry a header: corrupt bytes make ``create_timing_cache`` return None, a cache of
  another version/GPU makes ``set_timing_cache`` return False;
* ``set_shape`` raises on min > opt > max or a rank mismatch, ``add_optimization_profile`` returns
  -1 for a profile missing an input, ``set_input_shape`` returns False outside the profile;
* the logger gets VERBOSE chatter for every build.

What it cannot model: kernels, tactics, real precision choices (each ONNX node's output dtype
stands for its layer's precision, and layer types are approximations: real engines fuse far more),
Myelin, refit, plugins, DLA, weight streaming, real asynchrony (see cuda_fake.py) and any TensorRT
behaviour rsd-deploy does not call.
"""
from __future__ import annotations

import ctypes
import enum
import json
import types
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

PLAN_MAGIC = "fake-tensorrt-plan"
CACHE_MAGIC = b"fake-timing-cache|"


class Dims(tuple):
    def __new__(cls, shape=()):
        return super().__new__(cls, tuple(int(d) for d in shape))


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity

    def __init__(self) -> None:
        self._initialised = True


class Logger(ILogger):
    def __init__(self, min_severity: _Severity = _Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity, msg):  # pragma: no cover - the library installs its own logger
        pass


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8
    BF16 = 7


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class ProfilingVerbosity(enum.Enum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class LayerInformationFormat(enum.Enum):
    ONELINE = 0
    JSON = 1


class HardwareCompatibilityLevel(enum.Enum):
    NONE = 0
    AMPERE_PLUS = 1
    SAME_COMPUTE_CAPABILITY = 2


def _make_enum(name: str, members: List[str]) -> type:
    return enum.IntEnum(name, {m: i for i, m in enumerate(members)})


_ONNX_TO_TRT = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 7: DataType.INT64,
                9: DataType.BOOL, 2: DataType.UINT8, 16: DataType.BF16}
# 10.x "Format/Datatype" text, and the 11.x split: "Format" + "DataType"
_FORMAT_TEXT = {DataType.FLOAT: "Row major linear FP32 format", DataType.HALF: "Row major linear FP16 format",
                DataType.INT8: "Thirty-two wide channel vectorized row major Int8 format",
                DataType.BF16: "Row major linear BF16 format", DataType.INT32: "Row major linear INT32 format",
                DataType.INT64: "Row major linear INT64 format", DataType.BOOL: "Row major linear BOOL format",
                DataType.UINT8: "Row major linear UINT8 format"}
_FORMAT_11 = {DataType.INT8: "Thirty-two wide channel vectorized row major format (kCHW32)"}
_DTYPE_11 = {DataType.FLOAT: "Float", DataType.HALF: "Half", DataType.INT8: "Int8", DataType.BF16: "BFloat16",
             DataType.INT32: "Int32", DataType.INT64: "Int64", DataType.BOOL: "Bool", DataType.UINT8: "UInt8"}
_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
       DataType.INT64: np.int64, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}
_PRECISION_FLAGS = {"FP16", "INT8", "BF16", "FP8"}


# ----------------------------------------------------------------------------- build side


class _Tensor:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeNetwork:
    def __init__(self, fake: "FakeTensorRT", flags: int) -> None:
        self.fake = fake
        self.flags = flags
        self.onnx_path: Optional[str] = None
        self.inputs: List[str] = []
        self.ranks: Dict[str, int] = {}

    @property
    def strongly_typed(self) -> bool:
        return self.fake.flavour == "11" or bool(self.flags & (1 << 1))

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> _Tensor:
        return _Tensor(self.inputs[index])


class FakeOnnxParser:
    def __init__(self, network: FakeNetwork, logger: ILogger) -> None:
        network.fake._record("OnnxParser", logger=logger)
        self.network = network
        self.errors: List[str] = []

    def parse_from_file(self, path: str) -> bool:
        import onnx

        self.network.fake._record("parse_from_file", path=path)
        try:
            model = onnx.load(path)
        except Exception as exc:  # the real parser reports, it does not raise
            self.errors = [f"ModelImporter: failed to parse {Path(path).name}: {type(exc).__name__}"]
            return False
        initializers = {i.name for i in model.graph.initializer}
        graph_inputs = [i for i in model.graph.input if i.name not in initializers]
        self.network.inputs = [i.name for i in graph_inputs]
        self.network.ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in graph_inputs}
        self.network.onnx_path = path
        self.network.fake.network_inputs = list(self.network.inputs)
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class FakeProfile:
    def __init__(self, fake: "FakeTensorRT") -> None:
        self.fake = fake
        self.shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min, opt, max) -> None:  # noqa: A002 - TensorRT's names
        for dims in (min, opt, max):
            assert isinstance(dims, Dims), "profile shapes must be trt.Dims"
        self.fake._record("set_shape", name=name, min=tuple(min), opt=tuple(opt), max=tuple(max))
        if not (len(min) == len(opt) == len(max)) or any(a > b or b > c for a, b, c in zip(min, opt, max)):
            raise RuntimeError("IOptimizationProfile::setDimensions: Error Code 3: API Usage Error "
                               "(min <= opt <= max violated or ranks differ)")  # what the bindings raise
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data


class FakeBuilderConfig:
    def __init__(self, fake: "FakeTensorRT", network_inputs: Optional[List[str]] = None) -> None:
        self.fake = fake
        self.flags: set = {"TF32"}  # TensorRT enables TF32 by default
        self.pool_limits: Dict[Any, int] = {}
        self.builder_optimization_level = 3
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE
        self.profiles: List[FakeProfile] = []
        self.timing_cache: Optional[FakeTimingCache] = None

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self.fake._record("set_memory_pool_limit", pool=pool, size=size)
        self.pool_limits[pool] = size

    def set_flag(self, flag) -> None:
        self.fake._record("set_flag", flag=flag.name)
        self.flags.add(flag.name)

    def clear_flag(self, flag) -> None:
        self.fake._record("clear_flag", flag=flag.name)
        self.flags.discard(flag.name)

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.fake._record("add_optimization_profile", shapes=dict(profile.shapes))
        if self.fake.network_inputs and set(profile.shapes) != set(self.fake.network_inputs):
            return -1  # invalid: every network input needs min/opt/max
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def _cache_header(self) -> bytes:
        return CACHE_MAGIC + f"{self.fake.__version__}|{self.fake.gpu_key()}|".encode()

    def create_timing_cache(self, data: bytes) -> Optional[FakeTimingCache]:
        self.fake._record("create_timing_cache", nbytes=len(data))
        if not data:
            return FakeTimingCache(self._cache_header())
        if not bytes(data).startswith(CACHE_MAGIC):
            self.fake.log(_Severity.ERROR, "ITimingCache: the serialized timing cache is corrupt")
            return None
        return FakeTimingCache(data)

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.fake._record("set_timing_cache", ignore_mismatch=ignore_mismatch, nbytes=len(cache.data))
        if not cache.data.startswith(self._cache_header()) and not ignore_mismatch:
            self.fake.log(_Severity.ERROR, "IBuilderConfig::setTimingCache: cache from another device/version")
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache:
        return self.timing_cache or FakeTimingCache(b"")


class FakeBuilder:
    def __init__(self, fake: "FakeTensorRT", logger: ILogger) -> None:
        assert getattr(logger, "_initialised", False), "custom loggers must call ILogger.__init__"
        fake._record("Builder", logger=logger)
        fake.logger = logger
        self.fake = fake

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.fake._record("create_network", flags=flags)
        return FakeNetwork(self.fake, flags)

    def create_builder_config(self) -> FakeBuilderConfig:
        return FakeBuilderConfig(self.fake)

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile(self.fake)

    def build_serialized_network(self, network: FakeNetwork, config: FakeBuilderConfig) -> Optional[bytes]:
        fake = self.fake
        fake._record("build_serialized_network", flags=sorted(config.flags),
                     verbosity=config.profiling_verbosity, level=config.builder_optimization_level,
                     hardware=config.hardware_compatibility_level, network_flags=network.flags)
        fake.builds += 1
        for i in range(3):
            fake.log(_Severity.VERBOSE, f"fake tactic {i} of {Path(network.onnx_path or '?').name}")
        if fake.fail_build:
            return None
        precision_flags = sorted(config.flags & _PRECISION_FLAGS)
        if precision_flags and network.strongly_typed:  # 10.x: API usage error on strongly typed networks
            fake.log(_Severity.ERROR, f"BuilderFlag {precision_flags} not allowed with a strongly typed network")
            return None
        if len(config.profiles) != 1:
            fake.log(_Severity.ERROR, "network has dynamic inputs but no valid optimisation profile")
            return None
        if config.timing_cache is not None:  # the build "measures" one more tactic
            config.timing_cache = FakeTimingCache(config.timing_cache.data + b"tactic;")
        vc = "VERSION_COMPATIBLE" in config.flags
        plan = {"magic": PLAN_MAGIC, "version": fake.__version__, "onnx": network.onnx_path,
                "profile": {k: [list(s) for s in v] for k, v in config.profiles[0].shapes.items()},
                "detailed": config.profiling_verbosity == ProfilingVerbosity.DETAILED,
                "strongly_typed": network.strongly_typed, "gpu": list(fake.cuda.gpus[fake.cuda.current][1]),
                "version_compatible": vc, "exclude_lean_runtime": vc and "EXCLUDE_LEAN_RUNTIME" in config.flags,
                "hardware_compatible": config.hardware_compatibility_level != HardwareCompatibilityLevel.NONE}
        return json.dumps(plan).encode()


# ----------------------------------------------------------------------------- runtime side


def _tensor_json(name: str, dtype: DataType, flavour: str) -> Dict[str, Any]:
    if flavour == "11":
        return {"Name": name, "Format": _FORMAT_11.get(dtype, "Row major linear format (kLINEAR)"),
                "DataType": _DTYPE_11[dtype]}
    return {"Name": name, "Format/Datatype": _FORMAT_TEXT[dtype]}


class _OnnxModelInfo:
    """I/O names and dtypes of the ONNX behind a fake plan, and its 'layers' as the inspector lists
    them: one per node, except Q -> DQ -> Conv, which TensorRT fuses into one int8 convolution."""

    def __init__(self, path: str) -> None:
        import onnx

        model = onnx.load(path)
        inferred = onnx.shape_inference.infer_shapes(model)
        types_by_name = {v.name: v.type.tensor_type.elem_type
                         for v in list(inferred.graph.value_info) + list(inferred.graph.input)
                         + list(inferred.graph.output)}
        initializers = {i.name: i.data_type for i in model.graph.initializer}
        types_by_name.update(initializers)
        self.inputs = [(i.name, _ONNX_TO_TRT[i.type.tensor_type.elem_type])
                       for i in model.graph.input if i.name not in initializers]
        self.outputs = [(o.name, _ONNX_TO_TRT[o.type.tensor_type.elem_type]) for o in model.graph.output]
        nodes = list(model.graph.node)
        producer = {out: n for n in nodes for out in n.output}
        consumers: Dict[str, List[Any]] = {}
        for n in nodes:
            for name in n.input:
                consumers.setdefault(name, []).append(n)
        fused = set()
        for n in nodes:
            if n.op_type != "Conv":
                continue
            dq = producer.get(n.input[0])
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                fused.add(id(dq))
                if q is not None and q.op_type == "QuantizeLinear" and len(consumers.get(q.output[0], [])) == 1:
                    fused.add(id(q))
            weight_dq = producer.get(n.input[1]) if len(n.input) > 1 else None
            if weight_dq is not None and weight_dq.op_type == "DequantizeLinear":
                fused.add(id(weight_dq))
        self.layers: List[Tuple[str, str, DataType, DataType, str]] = []  # name, type, in dtype, out dtype, out
        for n in nodes:
            if id(n) in fused:
                continue
            out_dtype = _ONNX_TO_TRT.get(types_by_name.get(n.output[0], 1), DataType.FLOAT)
            in_dtype = _ONNX_TO_TRT.get(types_by_name.get(n.input[0], 1), DataType.FLOAT) if n.input else out_dtype
            kind = n.op_type
            if n.op_type == "Conv":
                kind = "CaskConvolution"
                dq = producer.get(n.input[0])
                if dq is not None and dq.op_type == "DequantizeLinear":
                    in_dtype = DataType.INT8  # Q/DQ fused: the convolution reads int8
            elif n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                kind, in_dtype, out_dtype = "Scale", DataType.INT8, DataType.INT8  # a lone, unfused Q or DQ
            self.layers.append((n.name or n.op_type, kind, in_dtype, out_dtype, n.output[0]))


class FakeInspector:
    def __init__(self, engine: "FakeEngine") -> None:
        self.engine = engine
        self.execution_context: Optional[FakeContext] = None

    def get_engine_information(self, fmt) -> str:
        engine = self.engine
        flavour = engine.fake.flavour
        engine.fake._record("get_engine_information", format=fmt, with_context=self.execution_context is not None)
        assert fmt == LayerInformationFormat.JSON
        shapes_known = self.execution_context is not None and self.execution_context.all_inputs_set()
        layers: List[Any] = []
        for name, kind, in_dtype, out_dtype, out in engine.info.layers:
            if not engine.plan["detailed"]:
                layers.append(name)
                continue
            tensors = {"Inputs": [_tensor_json("in", in_dtype, flavour)], "Outputs": [_tensor_json(out, out_dtype, flavour)]}
            if not shapes_known:
                for t in tensors["Inputs"] + tensors["Outputs"]:
                    for key in ("Format/Datatype", "Format", "DataType"):
                        if key in t:
                            t[key] = "N/A due to dynamic shapes"
            layers.append({"Name": name, "LayerType": kind, **tensors})
        io = engine.info.inputs + engine.info.outputs
        if flavour == "11":
            inputs = {n for n, _ in engine.info.inputs}
            listing: Any = {"I/O Tensors": [{"Name": n, "IOMode": "Input" if n in inputs else "Output",
                                              "DataType": _DTYPE_11[d], "Location": "Device"} for n, d in io]}
        else:
            listing = {"Bindings": [n for n, _ in io]}
        return json.dumps({"Layers": layers, **listing})


class FakeEngine:
    def __init__(self, fake: "FakeTensorRT", plan: Dict[str, Any]) -> None:
        self.fake = fake
        self.plan = plan
        self.device = fake.cuda.current  # TensorRT deserialises onto the current device
        self.info = _OnnxModelInfo(plan["onnx"])
        self.device_memory_size_v2 = 1 << 20
        if fake.flavour == "10":
            self.device_memory_size = 1 << 20

    @property
    def num_io_tensors(self) -> int:
        return len(self.info.inputs) + len(self.info.outputs)

    def _io(self) -> List[Tuple[str, DataType, TensorIOMode]]:
        return ([(n, d, TensorIOMode.INPUT) for n, d in self.info.inputs]
                + [(n, d, TensorIOMode.OUTPUT) for n, d in self.info.outputs])

    def get_tensor_name(self, index: int) -> str:
        return self._io()[index][0]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return {n: m for n, _, m in self._io()}.get(name, TensorIOMode.NONE)

    def get_tensor_dtype(self, name: str) -> DataType:
        return {n: d for n, d, _ in self._io()}[name]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Dims]:
        assert profile_index == 0
        return [Dims(s) for s in self.plan["profile"][name]]

    def create_execution_context(self) -> "FakeContext":
        self.fake._record("create_execution_context", device=self.fake.cuda.current)
        if self.fake.cuda.current != self.device:
            self.fake.cuda.violate(f"execution context created with device {self.fake.cuda.current} current for an "
                                   f"engine on device {self.device}")
        return FakeContext(self)

    def create_engine_inspector(self) -> FakeInspector:
        return FakeInspector(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.fake = engine.fake
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.addresses: Dict[str, int] = {}
        self._output_shapes: Dict[Tuple, Dict[str, Tuple[int, ...]]] = {}
        self._session = None
        weakref.finalize(self, engine.fake.cuda.context_released, id(self), Path(engine.plan["onnx"]).name)

    def all_inputs_set(self) -> bool:
        return all(n in self.shapes for n, _ in self.engine.info.inputs)

    def set_input_shape(self, name: str, shape) -> bool:
        assert isinstance(shape, Dims), "set_input_shape takes trt.Dims"
        self.fake._record("set_input_shape", name=name, shape=tuple(shape))
        low, _, high = self.engine.plan["profile"][name]
        if len(shape) != len(low) or any(s < a or s > b for s, a, b in zip(shape, low, high)):
            self.fake.log(_Severity.ERROR, f"IExecutionContext::setInputShape: {name} {tuple(shape)} out of profile")
            return False
        self.shapes[name] = tuple(shape)
        return True

    def _sess(self):
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(self.engine.plan["onnx"], options,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def get_tensor_shape(self, name: str) -> Dims:
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return Dims(self.shapes.get(name, ()))
        if not self.all_inputs_set():
            return Dims([-1, -1, -1, -1])
        key = tuple(sorted(self.shapes.items()))
        if key not in self._output_shapes:  # shape inference by running zeros (tiny graphs only)
            feeds = {n: np.zeros(self.shapes[n], _NP[d]) for n, d in self.engine.info.inputs}
            outs = self._sess().run(None, feeds)
            self._output_shapes[key] = {n: o.shape for (n, _), o in zip(self.engine.info.outputs, outs)}
        return Dims(self._output_shapes[key][name])

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.fake._record("set_tensor_address", name=name)
        if self.fake.cuda.find(address) is None:
            self.fake.cuda.violate(f"set_tensor_address({name}): {address:#x} is not device memory")
            return False
        self.addresses[name] = int(address)
        return True

    def _view(self, name: str, dtype: DataType, shape: Tuple[int, ...]) -> np.ndarray:
        np_dtype = np.dtype(_NP[dtype])
        count = int(np.prod(shape))
        buffer = (ctypes.c_char * (count * np_dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(buffer, dtype=np_dtype, count=count).reshape(shape)

    def _check_bound(self) -> bool:
        cuda = self.fake.cuda
        io = self.engine._io()
        missing = [n for n, _, _ in io if n not in self.addresses]
        if missing:
            self.fake.log(_Severity.ERROR, f"IExecutionContext::enqueueV3: tensor {missing[0]} has no address")
            return False
        if not self.all_inputs_set():
            self.fake.log(_Severity.ERROR, "IExecutionContext::enqueueV3: not all input shapes are specified")
            return False
        if cuda.current != self.engine.device:
            cuda.violate(f"execute_async_v3 with device {cuda.current} current for an engine on device "
                         f"{self.engine.device}")
        for name, _, _ in io:
            alloc = cuda.find(self.addresses[name])
            if alloc is None:
                cuda.violate(f"use-after-free: tensor {name} is bound to freed memory")
                return False
            if alloc.device != self.engine.device:
                cuda.violate(f"tensor {name} is in device-{alloc.device} memory, the engine is on device "
                             f"{self.engine.device}")
        return True

    def _run_now(self, stream) -> None:
        if not self._check_bound():
            return
        for name in self.addresses:
            self.fake.cuda.use(self.fake.cuda.find(self.addresses[name]), stream, context=self)
        feeds = {n: self._view(n, d, self.shapes[n]).copy() for n, d in self.engine.info.inputs}
        outs = self._sess().run(None, feeds)
        for (name, dtype), value in zip(self.engine.info.outputs, outs):
            view = self._view(name, dtype, tuple(self.get_tensor_shape(name)))
            np.copyto(view, value.astype(view.dtype))

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.fake._record("execute_async_v3", stream=stream_handle)
        stream = self.fake.cuda.stream(stream_handle)
        if stream.capturing is not None:
            if self.fake.fail_capture:
                stream.capturing.invalid = True
                return False
            if not self._check_bound():
                return False
            stream.capturing.ops.append((self, dict(self.shapes), dict(self.addresses)))
            return True
        if not self._check_bound():
            return False
        self._run_now(stream)
        return not self.fake.fail_execute


class FakeRuntime:
    def __init__(self, fake: "FakeTensorRT", logger: ILogger, lean_version: Optional[str] = None) -> None:
        fake._record("Runtime", logger=logger, lean=lean_version)
        self.fake = fake
        self.logger = logger
        self.lean_version = lean_version  # set for a runtime made by load_runtime
        self.engine_host_code_allowed = False

    def load_runtime(self, path: str) -> Optional["FakeRuntime"]:
        self.fake._record("load_runtime", path=path)
        version = self.fake.lean_libraries.get(str(path))
        if version is None:
            self.fake.log(_Severity.ERROR, f"IRuntime::loadRuntime: could not load {path}")
            return None
        return FakeRuntime(self.fake, self.logger, lean_version=version)

    def _refuse(self, why: str) -> None:
        self.fake.log(_Severity.ERROR, f"IRuntime::deserializeCudaEngine: {why}")

    def deserialize_cuda_engine(self, data) -> Optional[FakeEngine]:
        fake = self.fake
        fake._record("deserialize_cuda_engine", host_code=self.engine_host_code_allowed, lean=self.lean_version,
                     device=fake.cuda.current)
        fake.deserialized += 1
        try:
            plan = json.loads(bytes(data).decode())
        except (UnicodeDecodeError, ValueError):
            return None
        if plan.get("magic") != PLAN_MAGIC:
            return None
        from rsd_deploy.backends.trt_env import parse_version

        runtime_version = self.lean_version or fake.__version__
        if plan["version_compatible"]:
            if not self.engine_host_code_allowed:
                return self._refuse("version-compatible plan: engine host code is not allowed")
            if plan["exclude_lean_runtime"] and self.lean_version is None:
                return self._refuse("plan excludes the lean runtime: load one with IRuntime::loadRuntime")
            if plan["exclude_lean_runtime"] and self.lean_version != plan["version"]:
                return self._refuse(f"lean runtime {self.lean_version} cannot run a {plan['version']} plan")
            if parse_version(runtime_version) < parse_version(plan["version"]):
                return self._refuse("plan from a newer TensorRT")
        elif plan["version"] != runtime_version:
            return self._refuse(f"plan built by TensorRT {plan['version']}, this is {runtime_version}")
        name, capability, integrated = fake.cuda.gpus[fake.cuda.current]
        if plan["hardware_compatible"]:
            if integrated or tuple(capability) < (8, 0):
                return self._refuse("hardware-compatible plans need an sm80+ discrete GPU")
        elif tuple(plan["gpu"]) != tuple(capability):
            return self._refuse(f"plan built for sm{plan['gpu']}, this GPU is {name}")
        return FakeEngine(fake, plan)


# ----------------------------------------------------------------------------- the module


class FakeTensorRT(types.ModuleType):
    """Install with ``tests.export.trt_fixtures.install_fake`` (with its FakeCuda)."""

    def __init__(self, version: str = "10.13.0.35", flavour: str = "10", cuda: Any = None) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.flavour = flavour
        self.cuda = cuda
        self.calls: List[Tuple[str, Dict[str, Any]]] = []
        self.builds = 0
        self.deserialized = 0
        self.fail_build = False
        self.fail_execute = False
        self.fail_capture = False
        self.network_inputs: List[str] = []
        self.lean_libraries: Dict[str, str] = {}  # load_runtime path -> lean runtime version
        self.logger: Optional[ILogger] = None
        self.log_messages: List[Tuple[int, str]] = []
        fake = self

        self.ILogger = ILogger
        self.Logger = Logger
        self.Dims = Dims
        self.DataType = DataType
        self.TensorIOMode = TensorIOMode
        self.MemoryPoolType = MemoryPoolType
        self.ProfilingVerbosity = ProfilingVerbosity
        self.LayerInformationFormat = LayerInformationFormat
        self.HardwareCompatibilityLevel = HardwareCompatibilityLevel
        if flavour == "10":
            self.NetworkDefinitionCreationFlag = _make_enum("NetworkDefinitionCreationFlag",
                                                            ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
            self.BuilderFlag = _make_enum("BuilderFlag", ["FP16", "INT8", "TF32", "VERSION_COMPATIBLE",
                                                          "EXCLUDE_LEAN_RUNTIME", "REFIT", "BF16"])
        else:  # 11.x: always strongly typed, precision flags gone
            self.NetworkDefinitionCreationFlag = _make_enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH"])
            self.BuilderFlag = _make_enum("BuilderFlag", ["TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME",
                                                          "REFIT"])
        self.Builder = lambda logger: FakeBuilder(fake, logger)
        self.OnnxParser = FakeOnnxParser

        def runtime(logger):
            fake.logger = logger
            return FakeRuntime(fake, logger)

        self.Runtime = runtime

    def gpu_key(self) -> str:
        name, capability, _ = self.cuda.gpus[self.cuda.current]
        return f"{name}:{capability[0]}{capability[1]}"

    def log(self, severity: _Severity, message: str) -> None:
        """What TensorRT sends its logger (every severity: filtering is the logger's job)."""
        self.log_messages.append((int(severity), message))
        if self.logger is not None:
            self.logger.log(severity, message)

    def _record(self, call: str, **kwargs: Any) -> None:
        self.calls.append((call, kwargs))

    def called(self, call: str) -> List[Dict[str, Any]]:
        """The keyword records of every call to ``call``, in order."""
        return [kw for n, kw in self.calls if n == call]
