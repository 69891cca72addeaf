"""INT8 graphs: symmetric Q/DQ (zero point 0) from real-image calibration, sensitive nodes kept float,
accuracy vs PyTorch fp32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rsd_deploy.backends.capabilities import cpu_has_int8_dot
from rsd_deploy.errors import ExportError
from rsd_deploy.export.int8 import boundary_convs, high_precision_nodes, nonzero_zero_points, quantize_int8
from tests.export.onnx_tiny_export import accuracy_of, manifest_of


def test_every_qdq_zero_point_is_zero_and_int8(export_dir):
    model = onnx.load(str(export_dir / "decoder.int8.onnx"))
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 20
    assert nonzero_zero_points(model) == []
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in qdq if len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.data_type == TensorProto.INT8 for z in zero_points)
    assert all(not numpy_helper.to_array(z).any() for z in zero_points)


def test_sensitive_nodes_stay_float(export_dir):
    fp32 = onnx.load(str(export_dir / "decoder.onnx"))
    int8 = onnx.load(str(export_dir / "decoder.int8.onnx"))
    dq_outputs = {o for n in int8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in int8.graph.node}
    kept = set(high_precision_nodes(fp32)) | set(boundary_convs(fp32))
    assert any(k.startswith("/quantize/") for k in kept)  # the codebook distance MatMul
    for name in kept:
        node = by_name[name]
        weight_inputs = node.input[1:2]
        assert not any(i in dq_outputs for i in weight_inputs), name
    quantized_convs = [n for n in int8.graph.node if n.op_type == "Conv" and n.input[1] in dq_outputs]
    assert len(quantized_convs) >= 20
    recipe = manifest_of(export_dir)["graphs"]["decoder"]["variants"]["int8"]["precision_recipe"]
    assert recipe["options"]["ActivationSymmetric"] and recipe["options"]["WeightSymmetric"]
    assert sorted(recipe["kept_fp32"]) == sorted(kept)
    assert recipe["calibration"]["samples"] == 4 and recipe["calibration"]["folders"]


def test_graphs_that_feed_the_codebook_keep_fp32_by_default(export_dir):
    manifest = manifest_of(export_dir)
    for graph in ("encoder", "denoiser"):
        variants = manifest["graphs"][graph]["variants"]
        assert variants["int8"]["file"] == variants["fp32"]["file"]
        assert variants["int8"]["precision_recipe"]["kept_fp32"] == ["*"]


@pytest.mark.skipif(not cpu_has_int8_dot(), reason="int8 accuracy floors hold on CPUs with VNNI/AMX-INT8; on an "
                    "AVX2-only EPYC the int8 paths measured far lower (ORT 21.8 dB min, OpenVINO 19.0 dB mean): "
                    "a known gap, see train/RESULTS.md")
def test_int8_pipeline_accuracy(export_dir):
    """Measured on the tiny fixtures (latent 16, 4 crops, 4 calibration crops): ~31.4 dB end to end,
    no VQ code flips (the decoder is the only int8 graph)."""
    e2e = accuracy_of(export_dir)["end_to_end"]["int8"]
    assert e2e["psnr_db_min"] >= 30.0 and e2e["passed"]
    assert e2e["vq_code_flip_fraction"] == 0.0


def _tiny_conv_graph(path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 4, 3, 3)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w3")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4, "h", "w"])
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["b"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Conv", ["b", "w3"], ["y"], name="c3")]
    model = helper.make_model(helper.make_graph(nodes, "toy", [x], [y], [w, w2, w3]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def test_quantize_small_graph_and_reject_missing_calibration(tmp_path):
    src = tmp_path / "toy.onnx"
    _tiny_conv_graph(src)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    recipe = quantize_int8(src, tmp_path / "toy.int8.onnx", feeds)
    out = onnx.load(str(tmp_path / "toy.int8.onnx"))
    assert nonzero_zero_points(out) == []
    assert sorted(recipe.kept_fp32) == ["c1", "c3"]  # first and last conv
    with pytest.raises(ExportError, match="calibration"):
        quantize_int8(src, tmp_path / "none.onnx", [])


def test_nonzero_zero_point_is_detected():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.int8), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale, zp]),
                              opset_imports=[helper.make_opsetid("", 17)])
    assert nonzero_zero_points(model) == ["q", "dq"]


def test_calibration_folder_errors_are_one_line(tmp_path):
    from rsd_deploy.errors import ConfigError
    from rsd_deploy.export.calib import lr_crops

    with pytest.raises(ConfigError, match="does not exist"):
        lr_crops([tmp_path / "missing"], 16, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no images"):
        lr_crops([tmp_path / "empty"], 16, 2)
