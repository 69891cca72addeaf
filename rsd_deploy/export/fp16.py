"""FP16 pre-pass: cast an FP32 graph to FP16 with FP32 I/O and the numerically sensitive ops kept FP32.

TensorRT (strongly typed) and ONNX Runtime take precision from the graph, so this graph *is* the FP16
deployment decision. The cast is done by ``onnxconverter-common``'s maintained converter
(``convert_float_to_float16``): it inserts the Cast pairs around every blocked node and keeps the
graph I/O in float32 (``keep_io_types``). ModelOpt AutoCast was tried (``nvidia-modelopt`` 0.47
without extras installs light, ~17 MB plus pydantic/omegaconf/rich): on our dynamic-H/W decoder it
wrote a graph ONNX Runtime rejects ("Shape mismatch attempting to re-use buffer" in an inserted
Cast), so the converter is used: a plain wheel with an explicit block list the manifest records.
Two fixes around it: stale ``value_info`` is dropped before converting, and fp32->fp16->fp32 Cast
round trips it leaves between kept-FP32 nodes are removed (one sat at the VQ quantiser input and
flipped codes: decoder max error 0.51 -> 0.016).

ONNX Runtime's CPU provider runs most fp16 ops by upcasting, so the CPU check catches fp16 storage
rounding and overflow but not fp16 accumulation: necessary, not sufficient (DEPLOYMENT.md).
"""
from __future__ import annotations

import copy
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

logger = logging.getLogger(__name__)

#: op types kept FP32 everywhere: normalisation statistics (GroupNorm exports as Reshape +
#: InstanceNormalization at opset 17, GroupNormalization at 18; the decomposed form uses
#: ReduceMean/Pow/Sqrt), softmax (attention probabilities), the codebook ArgMin, and the ops
#: onnxconverter-common itself cannot run in FP16 (Resize, Range, ...).
FP32_OP_TYPES: Tuple[str, ...] = (
    "InstanceNormalization", "GroupNormalization", "LayerNormalization",
    "ReduceMean", "Pow", "Sqrt", "Softmax", "ArgMin",
)
#: node-name prefixes kept FP32 as a whole: the VQ quantiser (|z|^2 + |e|^2 - 2 z.e, ArgMin, Gather),
#: because a half-precision distance flips near-tie codes (MODEL_SPEC.md section 4).
FP32_NODE_PREFIXES: Tuple[str, ...] = ("/quantize/", "/vq/quantize/")


@dataclass
class PrecisionRecipe:
    """What the FP16 pass did, for the manifest (``precision_recipe``)."""

    tool: str
    kept_fp32: List[str] = field(default_factory=list)
    kept_fp32_op_types: List[str] = field(default_factory=list)
    kept_fp32_nodes: List[str] = field(default_factory=list)
    node_counts: Dict[str, int] = field(default_factory=dict)
    options: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "tool": self.tool,
            "kept_fp32": self.kept_fp32,
            "kept_fp32_op_types": self.kept_fp32_op_types,
            "kept_fp32_nodes": self.kept_fp32_nodes,
            "node_counts": self.node_counts,
            "options": self.options,
        }


def _node_prefix_matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name.startswith(p) for p in prefixes)


def remove_cast_round_trips(model) -> int:
    """Remove fp32 -> fp16 -> fp32 Cast pairs (in place); returns how many were removed.

    onnxconverter-common can route a tensor between two kept-FP32 nodes through an fp16 Cast and
    back (seen at the VQ quantiser input, where the rounding flips codes). Such a pair only loses
    precision: its consumers are rewired to the original fp32 tensor.
    """
    from onnx import TensorProto

    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumers: Dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def cast_to(node) -> int:
        return next((a.i for a in node.attribute if a.name == "to"), -1)

    removed, drop = 0, set()
    rename: Dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Cast" or cast_to(node) != TensorProto.FLOAT16:
            continue
        users = consumers.get(node.output[0], [])
        if not users or node.output[0] in outputs:
            continue
        if not all(u.op_type == "Cast" and cast_to(u) == TensorProto.FLOAT and u.output[0] not in outputs
                   for u in users):
            continue
        producer_is_fp32 = any(n.op_type != "Cast" or cast_to(n) == TensorProto.FLOAT
                               for n in graph.node if node.input[0] in n.output) or \
            node.input[0] in {i.name for i in graph.input}
        if not producer_is_fp32:
            continue
        drop.add(id(node))
        for u in users:
            drop.add(id(u))
            rename[u.output[0]] = node.input[0]
        removed += 1
    if not removed:
        return 0
    kept = [n for n in graph.node if id(n) not in drop]
    for n in kept:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(kept)
    return removed


def boundary_nodes(model) -> List[str]:
    """Nodes up to and including the first Conv and from the last Conv on (graph order is topological).

    Keeping the first and last layer in FP32 is the usual mixed-precision rule: the graph inputs
    (latents up to ~|6|) and outputs would otherwise be rounded to fp16 (spacing 2^-9 at 2..4), and
    that rounding alone flips VQ codes downstream. The cost is two convolutions per graph.
    """
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    keep = set(range(0, convs[0] + 1)) | set(range(convs[-1], len(nodes)))
    return [nodes[i].name for i in sorted(keep) if nodes[i].op_type != "Constant"]


def convert_to_fp16(model, extra_fp32_op_types: Sequence[str] = (), extra_fp32_nodes: Sequence[str] = (),
                    keep_boundary_layers: bool = False):
    """FP32 ``onnx.ModelProto`` -> (FP16 ModelProto with FP32 I/O, PrecisionRecipe).

    Kept FP32: every node whose op type is in :data:`FP32_OP_TYPES` (+ extra), every node whose name
    starts with a :data:`FP32_NODE_PREFIXES` entry, and the named ``extra_fp32_nodes``.
    """
    import onnxconverter_common
    from onnxconverter_common import float16

    from rsd_deploy.errors import ExportError

    op_types_present = Counter(n.op_type for n in model.graph.node)
    fp32_ops = list(dict.fromkeys(list(FP32_OP_TYPES) + list(extra_fp32_op_types)))
    block_ops = list(dict.fromkeys(list(float16.DEFAULT_OP_BLOCK_LIST) + fp32_ops))
    named = set(extra_fp32_nodes) | (set(boundary_nodes(model)) if keep_boundary_layers else set())
    block_nodes = [n.name for n in model.graph.node
                   if _node_prefix_matches(n.name, FP32_NODE_PREFIXES) or n.name in named]
    # stale value_info (from the exporter / onnxslim shape inference) makes the converter keep fp32
    # types on tensors it retypes: drop it and let the converter infer types afresh
    model = copy.deepcopy(model)
    del model.graph.value_info[:]
    try:
        with warnings.catch_warnings():
            # "the float32 number ... will be truncated to 1e-07": tiny weights flushed, expected
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block_ops,
                                                         node_block_list=block_nodes, disable_shape_infer=False)
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed ({type(exc).__name__}: {exc}); "
                          "export FP32 only or report the failing op") from exc
    round_trips = remove_cast_round_trips(converted)
    kept_types = sorted(t for t in block_ops if t in op_types_present)
    n_half = sum(1 for n in converted.graph.node if n.op_type != "Cast") - sum(op_types_present[t] for t in kept_types)
    recipe = PrecisionRecipe(
        tool=f"onnxconverter-common {onnxconverter_common.__version__} convert_float_to_float16",
        kept_fp32=kept_types + block_nodes,
        kept_fp32_op_types=kept_types,
        kept_fp32_nodes=block_nodes,
        node_counts={"total": len(converted.graph.node),
                     "cast": sum(1 for n in converted.graph.node if n.op_type == "Cast"),
                     "kept_fp32": sum(op_types_present[t] for t in kept_types) + len(block_nodes),
                     "fp16_compute_estimate": max(n_half - len(block_nodes), 0)},
        options={"keep_io_types": True, "min_positive_val": 1e-7, "max_finite_val": 1e4,
                 "keep_boundary_layers": keep_boundary_layers,
                 "removed_fp16_round_trips": round_trips},
    )
    logger.info("fp16: kept %d node(s) fp32 (%s)", recipe.node_counts["kept_fp32"], ", ".join(kept_types))
    return converted, recipe


def fp32_compute_nodes(model) -> List[str]:
    """Names of non-Cast nodes whose first float input is float32 in a converted graph (for tests).

    Uses ONNX shape inference for value types; I/O and initializers are included.
    """
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types: Dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    names = []
    for node in inferred.graph.node:
        if node.op_type == "Cast":
            continue
        float_inputs = [types.get(i) for i in node.input if types.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if float_inputs and float_inputs[0] == TensorProto.FLOAT:
            names.append(node.name)
    return names
