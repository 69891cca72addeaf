"""FakeTensorRT: a recording test double of the small ``tensorrt`` surface rsd-deploy uses.

THIS IS NOT TENSORRT. It records every call (``fake.calls``) so tests can assert the build
recipe (strong typing, profiles, flags, timing cache, inspector use) and the runtime protocol
(shapes and an address for every I/O tensor before ``execute_async_v3``). Passing tests with it
prove the wrapper logic, never that real engines build or run: ``tests/gpu`` does that.

To make the runtime path checkable on a CPU, a "plan" here is a JSON description of the build
that points at the ONNX file, and "executing" it runs that ONNX with ONNX Runtime on the memory
behind the raw addresses the code under test bound (CPU torch tensors stand in for device memory).
The inspector reports a layer per ONNX node with the node's output dtype, so an fp32 graph built
as "fp16" really shows no half layers. ``flavour="11"`` mimics TensorRT 11: no STRONGLY_TYPED
creation flag, no FP16/INT8 builder flags, no ``device_memory_size`` (only ``_v2``), and the
inspector's "I/O Tensors" key instead of "Bindings".
"""
from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

PLAN_MAGIC = "fake-tensorrt-plan"


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
_FORMAT_TEXT = {DataType.FLOAT: "Row major linear FP32 format", DataType.HALF: "Row major linear FP16 format",
                DataType.INT8: "Thirty-two wide channel vectorized row major Int8 format",
                DataType.BF16: "Row major linear BF16 format", DataType.INT32: "Row major linear INT32 format",
                DataType.INT64: "Row major linear INT64 format", DataType.BOOL: "Row major linear BOOL format",
                DataType.UINT8: "Row major linear UINT8 format"}
_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
       DataType.INT64: np.int64, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}


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
        self.network.inputs = [i.name for i in model.graph.input if i.name not in initializers]
        self.network.onnx_path = path
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
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data


class FakeBuilderConfig:
    def __init__(self, fake: "FakeTensorRT") -> None:
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
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        self.fake._record("create_timing_cache", nbytes=len(data))
        return FakeTimingCache(data)

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.fake._record("set_timing_cache", ignore_mismatch=ignore_mismatch, nbytes=len(cache.data))
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache:
        return self.timing_cache or FakeTimingCache(b"")


class FakeBuilder:
    def __init__(self, fake: "FakeTensorRT", logger: ILogger) -> None:
        assert getattr(logger, "_initialised", False), "custom loggers must call ILogger.__init__"
        fake._record("Builder", logger=logger)
        self.fake = fake

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.fake._record("create_network", flags=flags)
        return FakeNetwork(self.fake, flags)

    def create_builder_config(self) -> FakeBuilderConfig:
        return FakeBuilderConfig(self.fake)

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile(self.fake)

    def build_serialized_network(self, network: FakeNetwork, config: FakeBuilderConfig) -> Optional[bytes]:
        self.fake._record("build_serialized_network", flags=sorted(config.flags),
                          verbosity=config.profiling_verbosity, level=config.builder_optimization_level,
                          hardware=config.hardware_compatibility_level, network_flags=network.flags)
        self.fake.builds += 1
        if self.fake.fail_build:
            return None
        assert len(config.profiles) == 1, "rsd-deploy builds exactly one optimisation profile"
        if config.timing_cache is not None:  # the build "measures" one more tactic
            config.timing_cache = FakeTimingCache(config.timing_cache.data + b"tactic;")
        plan = {"magic": PLAN_MAGIC, "version": self.fake.__version__, "onnx": network.onnx_path,
                "profile": {k: [list(s) for s in v] for k, v in config.profiles[0].shapes.items()},
                "detailed": config.profiling_verbosity == ProfilingVerbosity.DETAILED,
                "strongly_typed": bool(network.flags & 2) or self.fake.flavour == "11"}
        return json.dumps(plan).encode()


# ----------------------------------------------------------------------------- runtime side


class _OnnxModelInfo:
    """I/O names, dtypes and per-node output dtypes of the ONNX behind a fake plan."""

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
        self.layers = []
        for node in model.graph.node:
            dtype = _ONNX_TO_TRT.get(types_by_name.get(node.output[0], 1), DataType.FLOAT)
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                dtype = DataType.INT8  # the fused int8 layer TensorRT makes around Q/DQ
            self.layers.append({"Name": node.name or node.op_type, "LayerType": node.op_type,
                                "Outputs": [{"Name": node.output[0], "Format/Datatype": _FORMAT_TEXT[dtype]}]})


class FakeInspector:
    def __init__(self, engine: "FakeEngine") -> None:
        self.engine = engine
        self.execution_context: Optional[FakeContext] = None

    def get_engine_information(self, fmt) -> str:
        engine = self.engine
        engine.fake._record("get_engine_information", format=fmt,
                            with_context=self.execution_context is not None)
        assert fmt == LayerInformationFormat.JSON
        shapes_known = self.execution_context is not None and self.execution_context.all_inputs_set()
        layers: List[Any] = []
        for layer in engine.info.layers:
            if not engine.plan["detailed"]:
                layers.append(layer["Name"])
                continue
            layer = json.loads(json.dumps(layer))
            if not shapes_known:
                for t in layer["Outputs"]:
                    t["Format/Datatype"] = "N/A due to dynamic shapes"
            layers.append(layer)
        io_key = "I/O Tensors" if engine.fake.flavour == "11" else "Bindings"
        return json.dumps({"Layers": layers, io_key: [n for n, _ in engine.info.inputs + engine.info.outputs]})


class FakeEngine:
    def __init__(self, fake: "FakeTensorRT", plan: Dict[str, Any]) -> None:
        self.fake = fake
        self.plan = plan
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
        self.fake._record("create_execution_context")
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

    def all_inputs_set(self) -> bool:
        return all(n in self.shapes for n, _ in self.engine.info.inputs)

    def set_input_shape(self, name: str, shape) -> bool:
        assert isinstance(shape, Dims), "set_input_shape takes trt.Dims"
        self.fake._record("set_input_shape", name=name, shape=tuple(shape))
        low, _, high = self.engine.plan["profile"][name]
        if len(shape) != len(low) or any(s < a or s > b for s, a, b in zip(shape, low, high)):
            return False  # the real runtime logs an error and returns False
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
        self.addresses[name] = int(address)
        return True

    def _view(self, name: str, dtype: DataType, shape: Tuple[int, ...]) -> np.ndarray:
        np_dtype = np.dtype(_NP[dtype])
        count = int(np.prod(shape))
        buffer = (ctypes.c_char * (count * np_dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(buffer, dtype=np_dtype, count=count).reshape(shape)

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.fake._record("execute_async_v3", stream=stream_handle)
        io = self.engine._io()
        missing = [n for n, _, _ in io if n not in self.addresses]
        assert not missing, f"execute_async_v3 without an address for {missing} (undefined behaviour in TensorRT)"
        assert self.all_inputs_set(), "execute_async_v3 before every input shape was set"
        feeds = {n: self._view(n, d, self.shapes[n]).copy() for n, d in self.engine.info.inputs}
        outs = self._sess().run(None, feeds)
        for (name, dtype), value in zip(self.engine.info.outputs, outs):
            view = self._view(name, dtype, tuple(self.get_tensor_shape(name)))
            np.copyto(view, value.astype(view.dtype))
        return not self.fake.fail_execute


class FakeRuntime:
    def __init__(self, fake: "FakeTensorRT", logger: ILogger) -> None:
        fake._record("Runtime", logger=logger)
        self.fake = fake
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, data) -> Optional[FakeEngine]:
        self.fake._record("deserialize_cuda_engine", host_code=self.engine_host_code_allowed)
        self.fake.deserialized += 1
        try:
            plan = json.loads(bytes(data).decode())
        except (UnicodeDecodeError, ValueError):
            return None
        if plan.get("magic") != PLAN_MAGIC or plan.get("version") != self.fake.__version__:
            return None  # the real runtime refuses plans from other versions
        return FakeEngine(self.fake, plan)


# ----------------------------------------------------------------------------- the module


class FakeTensorRT(types.ModuleType):
    """Install with ``monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())``."""

    def __init__(self, version: str = "10.13.0.35", flavour: str = "10") -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.flavour = flavour
        self.calls: List[Tuple[str, Dict[str, Any]]] = []
        self.builds = 0
        self.deserialized = 0
        self.fail_build = False
        self.fail_execute = False
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
                                                          "EXCLUDE_LEAN_RUNTIME", "REFIT"])
        else:  # 11.x: always strongly typed, precision flags gone
            self.NetworkDefinitionCreationFlag = _make_enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH"])
            self.BuilderFlag = _make_enum("BuilderFlag", ["TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME",
                                                          "REFIT"])
        self.Builder = lambda logger: FakeBuilder(fake, logger)
        self.OnnxParser = FakeOnnxParser
        self.Runtime = lambda logger: FakeRuntime(fake, logger)

    def _record(self, call: str, **kwargs: Any) -> None:
        self.calls.append((call, kwargs))

    def called(self, call: str) -> List[Dict[str, Any]]:
        """The keyword records of every call to ``call``, in order."""
        return [kw for n, kw in self.calls if n == call]
