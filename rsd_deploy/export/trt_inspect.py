"""Read a built plan's layer precisions from the engine inspector, and the precision gate.

The inspector JSON (``get_engine_information(LayerInformationFormat.JSON)``, profiling verbosity
DETAILED) changed in TensorRT 11 (NVIDIA, "Migrating IEngineInspector Usage from TensorRT 10.x to
11.x"): the flat ``"Bindings"`` list of names became ``"I/O Tensors"``, a list of objects
(``Name``, ``IOMode``, ``DataType``, ...), and each layer tensor's ``"Format/Datatype"`` text was
split into ``"Format"`` and ``"DataType"``. Both shapes are read here.

Engines with dynamic shapes report formats as "N/A due to dynamic shapes" unless the inspector is
given an execution context whose input shapes are set: :func:`inspect_plan` does so.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from rsd_deploy.backends.trt_env import require_tensorrt
from rsd_deploy.backends.trt_plans import PlanRuntime
from rsd_deploy.backends.trt_runtime import deserialize
from rsd_deploy.errors import BackendUnavailableError, EnginePrecisionError, ShapeError

_BOOKKEEPING_LAYERS = {"Reformat", "NoOp", "Constant", "Shuffle", "Identity"}
_CONV = re.compile(r"conv", re.IGNORECASE)  # CaskConvolution, CaskDeconvolution, Convolution
_INT8 = re.compile(r"\bint8\b", re.IGNORECASE)
_HALF = re.compile(r"\b(fp16|half)\b", re.IGNORECASE)
_BF16 = re.compile(r"\bbf16\b", re.IGNORECASE)
_FLOAT = re.compile(r"\b(fp32|float)\b", re.IGNORECASE)
_DTYPE_KEYS = ("DataType", "Datatype", "Format/Datatype", "Format")  # 11.x split first, then 10.x


@dataclass(frozen=True)
class LayerPrecisionSummary:
    """How many compute layers of an engine run in each precision (from the inspector JSON)."""

    layers: int
    half: int = 0
    int8: int = 0
    bf16: int = 0
    float32: int = 0
    unknown: int = 0
    int8_conv: int = 0  # convolutions reading int8: Q/DQ fused into them
    io_tensors: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def half_share(self) -> float:
        """Fraction of classified compute layers that run in fp16."""
        known = self.layers - self.unknown
        return self.half / known if known else 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "layers": self.layers, "half": self.half, "int8": self.int8, "bf16": self.bf16,
            "float32": self.float32, "unknown": self.unknown, "int8_conv": self.int8_conv,
            "half_share": round(self.half_share, 4),
        }


def _tensor_dtype_text(tensor: Mapping[str, Any]) -> str:
    for key in _DTYPE_KEYS:
        value = tensor.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _classify(text: str) -> str:
    # int8 first: an int8 conv reads int8 and may write half or float
    for label, pattern in (("int8", _INT8), ("half", _HALF), ("bf16", _BF16), ("float32", _FLOAT)):
        if pattern.search(text):
            return label
    return "unknown"


def _tensors(layer: Mapping[str, Any], key: str) -> List[Mapping[str, Any]]:
    return [t for t in layer.get(key, ()) or () if isinstance(t, Mapping)]


def _io_name(entry: Any) -> str:
    """A 10.x "Bindings" name, or the ``Name`` of an 11.x "I/O Tensors" object."""
    return str(entry.get("Name", "?")) if isinstance(entry, Mapping) else str(entry)


def summarize_layer_precisions(engine_information_json: str) -> LayerPrecisionSummary:
    """Count compute layers per precision in ``EngineInspector.get_engine_information(JSON)``.

    Reformat/NoOp/Constant/Shuffle layers are bookkeeping and not counted.
    """
    info = json.loads(engine_information_json)
    info = info if isinstance(info, Mapping) else {}
    layers = info.get("Layers", [])
    io_list = info.get("I/O Tensors", info.get("Bindings", []))
    counts = {"half": 0, "int8": 0, "bf16": 0, "float32": 0, "unknown": 0}
    total = int8_conv = 0
    for layer in layers:
        if not isinstance(layer, Mapping):  # LAYER_NAMES_ONLY verbosity gives plain strings
            counts["unknown"] += 1
            total += 1
            continue
        if layer.get("LayerType") in _BOOKKEEPING_LAYERS:
            continue
        inputs, outputs = _tensors(layer, "Inputs"), _tensors(layer, "Outputs")
        label = _classify(" ".join(_tensor_dtype_text(t) for t in inputs + outputs))
        counts[label] += 1
        total += 1
        reads_int8 = any(_classify(_tensor_dtype_text(t)) == "int8" for t in inputs)
        if reads_int8 and _CONV.search(str(layer.get("LayerType", ""))):
            int8_conv += 1
    return LayerPrecisionSummary(layers=total, int8_conv=int8_conv,
                                 io_tensors=tuple(_io_name(n) for n in io_list), **counts)


def check_engine_precision(
    summary: LayerPrecisionSummary, precision: str, engine_name: str, min_half_share: float = 0.1
) -> None:
    """Fail loudly when an engine did not keep the precision its ONNX graph asked for.

    TensorRT silently builds fp32 layers when the graph's Casts/Q/DQ are lost, so an "fp16" engine
    with almost no half layers, or an "int8" engine without an int8 convolution, is an error. Any
    layer touching int8 is not enough for int8: a lone Q/DQ pair TensorRT could not fuse runs as
    its own int8 layer and proves nothing about the convolutions.
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
    if precision == "int8" and summary.int8_conv == 0:
        raise EnginePrecisionError(
            f"{engine_name}: 'int8' engine has no int8 convolution ({summary.int8} int8 of {known} layers): "
            "TensorRT did not fuse the Q/DQ nodes into the convolutions; re-export the INT8 graph "
            "(rsd-export --int8) with Q/DQ on every conv input and zero points of 0"
        )


def inspect_plan(plan: bytes, input_shapes: Mapping[str, Sequence[int]],
                 needs: PlanRuntime = PlanRuntime()) -> LayerPrecisionSummary:
    """Deserialize ``plan`` on the current GPU and summarise layer precisions at ``input_shapes``."""
    require_tensorrt()
    import tensorrt as trt

    runtimes, engine = deserialize(plan, needs)
    context = engine.create_execution_context()
    if context is None:
        raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
    for name, shape in input_shapes.items():
        if not context.set_input_shape(name, trt.Dims(list(shape))):
            raise ShapeError(f"the engine refused input {name} at its opt shape {tuple(shape)} "
                             "(the profile TensorRT built differs from the export spec); rebuild the engine")
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context  # dynamic shapes: formats are 'N/A' without a context
    summary = summarize_layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    del inspector, context, engine, runtimes
    return summary
