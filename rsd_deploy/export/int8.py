"""INT8 pre-pass: explicit symmetric Q/DQ (zero point 0, as TensorRT requires), calibrated on real data.

ONNX Runtime's ``quant_pre_process`` (shape inference + basic graph cleanup) then ``quantize_static``
in QDQ format with signed int8 activations and weights, per-channel weights, symmetric ranges.
Only convolutions and weight MatMul/Gemm layers are quantised; these stay in higher precision because
int8 noise there is amplified or breaks discrete choices:

* the VQ quantiser (distance + ArgMin + Gather): a code flip changes a whole 4x4 output patch;
* attention products whose both operands are activations (Q.K^T, P.V): int8 softmax inputs and
  probabilities cost far more accuracy than they save in time;
* the first and last convolution of the graph;
* convolutions fed directly by a Concat (the UNet's skip connections join two differently scaled
  tensors): OpenVINO's int8 kernels moved the quantisation through the Concat and had 6x ONNX
  Runtime's error there (measured on the embedded denoiser: mean abs error of x0 0.26 against 0.04
  with them quantised, 0.007 against 0.007 with them kept float).

Calibration uses ORT's Percentile method (99.999 %): on the tiny VQ decoder it beat MinMax by
1.7 dB SR PSNR (MinMax and Entropy gave identical ranges).

Which graphs get an INT8 variant at all is the exporter's choice (``ExportConfig.int8_graphs``):
by default the VQ encoder and decoder; the denoiser stays fp32 because its output is what the VQ
argmin quantises (on the embedded model int8 there flipped 60 % of the codes: 33.5 dB end to end
against 35.3 dB with it fp32; the encoder's int8 error did not show). On the untrained tiny fixtures
the encoder's int8 error does flip codes (22 dB), so their test export quantises the decoder only.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from rsd_deploy.errors import ExportError

logger = logging.getLogger(__name__)

#: graphs quantised by default (measured on the embedded model, 8 imagenet_val_sr LR images, int8 vs torch
#: fp32 at the pipeline output: all three 33.5 dB with 60 % of the VQ codes flipped; denoiser kept fp32
#: 35.3 dB, no flips; the encoder's int8 changed nothing measurable). See int8.py.
INT8_GRAPHS = ("encoder", "decoder")
KEPT_FP32_REASON = {
    "denoiser": "its output x0 is what the VQ argmin quantises: int8 there flipped 60 % of the codes on the "
                "embedded model (33.5 dB against 35.3 dB end to end with it fp32); select it with --int8-graphs",
    "encoder": "not selected with --int8-graphs (its int8 error was not measurable end to end on the embedded model)",
    "decoder": "not selected with --int8-graphs",
}
QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
HIGH_PRECISION_NODE_PREFIXES = ("/quantize/", "/vq/quantize/")


@dataclass
class Int8Recipe:
    tool: str
    calibration: Dict[str, object]
    kept_fp32: List[str] = field(default_factory=list)
    quantized_op_types: List[str] = field(default_factory=list)
    node_counts: Dict[str, int] = field(default_factory=dict)
    options: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"tool": self.tool, "kept_fp32": self.kept_fp32, "quantized_op_types": self.quantized_op_types,
                "calibration": self.calibration, "node_counts": self.node_counts, "options": self.options}


class _ListReader:
    """ORT CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: Sequence[Dict[str, np.ndarray]]):
        self._feeds = list(feeds)
        self._it = iter(self._feeds)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


class _LogWriter:
    """A stdout stand-in that sends lines to this module's debug log."""

    def write(self, text: str) -> int:
        if text.strip():
            logger.debug("onnxruntime.quantization: %s", text.strip())
        return len(text)

    def flush(self) -> None:
        pass


def boundary_convs(model) -> List[str]:
    """The first and last Conv (graph order is topological): they see the raw input and write the
    output image / latent, where int8 steps are visible directly (measured on the tiny VQ decoder:
    +2 dB PSNR for two convolutions kept in float)."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    return list(dict.fromkeys(convs[:1] + convs[-1:]))


def high_precision_nodes(model) -> List[str]:
    """Nodes of the quantised op types that must stay float: the quantiser, activation x activation
    MatMuls (attention) and convolutions fed by a Concat (see the module docstring)."""
    initializers = {i.name for i in model.graph.initializer}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weights = initializers | constants
    concat_outputs = {o for n in model.graph.node if n.op_type == "Concat" for o in n.output}
    keep = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES:
            continue
        if any(node.name.startswith(p) for p in HIGH_PRECISION_NODE_PREFIXES):
            keep.append(node.name)
        elif node.op_type == "MatMul" and not any(i in weights for i in node.input):
            keep.append(node.name)
        elif node.op_type == "Conv" and node.input and node.input[0] in concat_outputs:
            keep.append(node.name)
    return keep


def quantize_int8(fp32_path: Path, out_path: Path, calibration: Sequence[Dict[str, np.ndarray]],
                  calibration_info: Optional[Dict[str, object]] = None,
                  external_data: bool = False, extra_exclude: Iterable[str] = (),
                  method: str = "Percentile", keep_boundary_convs: bool = True) -> Int8Recipe:
    """Write a symmetric QDQ int8 graph of ``fp32_path`` to ``out_path`` (+ ``.data`` when external).

    ``calibration``: feed dicts with the graph's input names (real data, see :mod:`calib`).
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ExportError("INT8 needs calibration data; pass --calib DIR with images")
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # symbolic shape inference cannot resolve the Swin reshapes of dynamic H, W; ONNX's suffices
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True,
                              save_as_external_data=external_data, all_tensors_to_one_file=True,
                              external_data_location="pre.onnx.data")
        except Exception as exc:
            raise ExportError(f"INT8 pre-processing of {fp32_path.name} failed: {exc}") from exc
        model = onnx.load(str(pre), load_external_data=False)
        boundary = boundary_convs(model) if keep_boundary_convs else []
        exclude = sorted(set(high_precision_nodes(model)) | set(boundary) | set(extra_exclude))
        tmp_out = Path(tmp) / out_path.name
        # biases stay float: TensorRT has no int32 DequantizeLinear and fuses the float bias itself
        options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                   # ORT otherwise holds every activation of every calibration crop at once (GBs at full size)
                   "CalibMaxIntermediateOutputs": 1}
        try:
            with contextlib.redirect_stdout(_LogWriter()):  # ORT's calibrator prints progress to stdout
                quantize_static(str(pre), str(tmp_out), _ListReader(calibration), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                                op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_exclude=exclude,
                                calibrate_method=getattr(CalibrationMethod, method),
                                use_external_data_format=external_data, extra_options=options)
        except Exception as exc:  # noqa: B902 - any ORT failure is an export failure
            raise ExportError(f"INT8 quantisation of {fp32_path.name} failed: {exc}") from exc
        quantized = onnx.load(str(tmp_out))
    bad = nonzero_zero_points(quantized)
    if bad:
        raise ExportError(f"INT8 graph has non-zero Q/DQ zero points ({', '.join(bad[:3])}); TensorRT needs symmetric int8")
    from rsd_deploy.export.onnx_export import save_onnx

    save_onnx(quantized, out_path, external_data)
    counts = {"QuantizeLinear": sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node),
              "DequantizeLinear": sum(n.op_type == "DequantizeLinear" for n in quantized.graph.node),
              "kept_fp32": len(exclude)}
    return Int8Recipe(
        tool=f"onnxruntime {onnxruntime.__version__} quant_pre_process + quantize_static (QDQ)",
        calibration=dict(calibration_info or {}, samples=len(calibration), method=method),
        kept_fp32=exclude,
        quantized_op_types=list(QUANTIZED_OP_TYPES),
        node_counts=counts,
        options={"activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True, **options},
    )


def nonzero_zero_points(model) -> List[str]:
    """Names of Q/DQ nodes whose zero point is not all zeros (empty list = TensorRT-compatible)."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    bad = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = values.get(node.input[2])
            if zp is None or np.any(zp != 0):
                bad.append(node.name)
    return bad


