"""Engine-inspector parsing and the precision gate, on inspector JSON in the shapes TensorRT writes.

The samples follow what ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)``
returns with profiling verbosity DETAILED: 10.x lists I/O under "Bindings", 11.x under
"I/O Tensors"; tensor formats read e.g. "Row major linear FP16 format", or "N/A due to dynamic
shapes" when no execution context with input shapes was attached.
"""
from __future__ import annotations

import json

import pytest

from rsd_deploy.errors import EnginePrecisionError
from rsd_deploy.backends.trt_env import parse_version
from rsd_deploy.export.trt_inspect import check_engine_precision, summarize_layer_precisions


def _layer(kind, fmt, name="l"):
    return {"Name": name, "LayerType": kind,
            "Inputs": [{"Name": "in", "Dimensions": [1, 64, 32, 32], "Format/Datatype": fmt}],
            "Outputs": [{"Name": "out", "Dimensions": [1, 64, 32, 32], "Format/Datatype": fmt}]}


FP16 = "Channel major FP16 format where channel % 8 == 0"
FP32 = "Row major linear FP32"
INT8 = "Thirty-two wide channel vectorized row major Int8 format."


def test_counts_per_precision_and_skips_bookkeeping_layers():
    info = {"Layers": [_layer("CaskConvolution", FP16), _layer("CaskConvolution", FP16),
                       _layer("Reformat", FP32), _layer("Myelin", FP32), _layer("NoOp", FP32),
                       _layer("CaskConvolution", INT8)],
            "Bindings": ["image", "latent"]}
    summary = summarize_layer_precisions(json.dumps(info))
    assert (summary.layers, summary.half, summary.float32, summary.int8) == (4, 2, 1, 1)
    assert summary.half_share == 0.5 and summary.io_tensors == ("image", "latent")
    check_engine_precision(summary, "fp16", "x.plan")
    check_engine_precision(summary, "int8", "x.plan")


def _layer11(kind, dtype, fmt="Row major linear format (kLINEAR)", name="l", input_dtype=None):
    """A layer as TensorRT 11 lists it: "Format" and "DataType" are separate keys."""
    return {"Name": name, "LayerType": kind,
            "Inputs": [{"Name": "in", "Dimensions": [1, 64, 32, 32], "Format": fmt, "DataType": input_dtype or dtype}],
            "Outputs": [{"Name": "out", "Dimensions": [1, 64, 32, 32], "Format": fmt, "DataType": dtype}]}


def test_tensorrt_11_split_datatype_and_io_tensor_objects():
    # NVIDIA, "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x": Bindings -> I/O Tensors
    # (objects), Format/Datatype -> Format + DataType
    info = {"Layers": [_layer11("CaskConvolution", "Half"), _layer11("CaskConvolution", "Half"),
                       _layer11("CaskConvolution", "Float"),
                       _layer11("CaskConvolution", "Half", "Thirty-two wide channel vectorized row major format",
                                input_dtype="Int8")],
            "I/O Tensors": [{"Name": "image", "IOMode": "Input", "DataType": "Float", "Dimensions": [1, 3, 64, 64],
                             "Location": "Device"},
                            {"Name": "latent", "IOMode": "Output", "DataType": "Float", "Location": "Device"}]}
    summary = summarize_layer_precisions(json.dumps(info))
    assert (summary.layers, summary.half, summary.float32, summary.int8, summary.unknown) == (4, 2, 1, 1, 0)
    assert summary.int8_conv == 1 and summary.io_tensors == ("image", "latent")
    check_engine_precision(summary, "fp16", "x.plan")
    check_engine_precision(summary, "int8", "x.plan")


def test_int8_gate_needs_an_int8_convolution_not_a_lone_qdq():
    # a Q/DQ pair TensorRT could not fuse runs as int8 "Scale" layers beside fp32 convolutions
    lone = {"Layers": [_layer("Scale", INT8), _layer("Scale", INT8)] + [_layer("CaskConvolution", FP32)] * 4}
    summary = summarize_layer_precisions(json.dumps(lone))
    assert summary.int8 == 2 and summary.int8_conv == 0
    with pytest.raises(EnginePrecisionError, match=r"no int8 convolution \(2 int8 of 6 layers\)"):
        check_engine_precision(summary, "int8", "denoiser.int8.plan")
    fused = {"Layers": [_layer("CaskConvolution", INT8)] + [_layer("CaskConvolution", FP32)] * 4}
    check_engine_precision(summarize_layer_precisions(json.dumps(fused)), "int8", "denoiser.int8.plan")


def test_tensorrt_11_keys_and_short_format_names():
    info = {"Layers": [_layer("kgen", "Half"), _layer("kgen", "Float")], "I/O Tensors": ["x", "y"]}
    summary = summarize_layer_precisions(json.dumps(info))
    assert (summary.half, summary.float32, summary.io_tensors) == (1, 1, ("x", "y"))


def test_all_fp32_engine_called_fp16_fails_loudly():
    summary = summarize_layer_precisions(json.dumps({"Layers": [_layer("CaskConvolution", FP32)] * 20}))
    with pytest.raises(EnginePrecisionError, match=r"denoiser\.fp16\.plan: 'fp16' engine has only 0/20"):
        check_engine_precision(summary, "fp16", "denoiser.fp16.plan")
    check_engine_precision(summary, "fp32", "denoiser.fp32.plan")  # fine as fp32
    with pytest.raises(EnginePrecisionError, match="no int8 convolution"):
        check_engine_precision(summary, "int8", "denoiser.int8.plan")


def test_threshold_is_a_share_of_classified_layers():
    layers = [_layer("CaskConvolution", FP16)] + [_layer("CaskConvolution", FP32)] * 19
    summary = summarize_layer_precisions(json.dumps({"Layers": layers}))
    check_engine_precision(summary, "fp16", "e", min_half_share=0.05)
    with pytest.raises(EnginePrecisionError, match=r"1/20 half-precision layers \(5% < 10%\)"):
        check_engine_precision(summary, "fp16", "e", min_half_share=0.10)


@pytest.mark.parametrize("layers", [
    [_layer("CaskConvolution", "N/A due to dynamic shapes")] * 3,  # no execution context attached
    ["conv1", "conv2"],  # LAYER_NAMES_ONLY verbosity
])
def test_unreadable_precisions_are_not_taken_as_success(layers):
    summary = summarize_layer_precisions(json.dumps({"Layers": layers}))
    assert summary.unknown == summary.layers > 0
    with pytest.raises(EnginePrecisionError, match="no layer data types"):
        check_engine_precision(summary, "fp16", "e")


def test_parse_version():
    assert parse_version("10.13.0.35") == (10, 13, 0, 35)
    assert parse_version("11.4.0.5.post1") == (11, 4, 0, 5)
    assert parse_version("10.12.0.36") < parse_version("10.13.0.35") < parse_version("11.0.0.1")
