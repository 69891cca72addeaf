"""Build-side checks issue 16 asked for, through FakeTensorRT (a test double, NOT TensorRT): typed
profile errors, the return of add_optimization_profile, set_input_shape in the inspector step,
the logger's severity filter, and the int8 gate on fused vs lone Q/DQ graphs."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rsd_deploy.backends import trt_env
from rsd_deploy.errors import EnginePrecisionError, ShapeError
from rsd_deploy.export import trt_build, trt_inspect
from rsd_deploy.export.trt_build import BuildSettings
from tests.export.trt_fixtures import fake_trt, install_fake, no_cuda_violations  # noqa: F401

PROFILE = {"x": ((1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 64))}


def _qdq_conv(path, fused: bool):
    """x -> Q -> DQ -> Conv -> y (TensorRT fuses it into an int8 conv), or with a Relu between DQ and
    Conv (the Q/DQ pair stays alone and the conv stays fp32)."""
    w = np.random.default_rng(0).standard_normal((3, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "zp"), numpy_helper.from_array(w, "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq")]
    if fused:
        nodes.append(helper.make_node("Conv", ["xd", "w"], ["y"], pads=[1, 1, 1, 1], name="conv"))
    else:
        nodes += [helper.make_node("Relu", ["xd"], ["xr"], name="relu"),
                  helper.make_node("Conv", ["xr", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    dims = [1, 3, "h", "w"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("flavour, version", [("10", "10.13.0.35"), ("11", "11.4.0.5")])
def test_int8_gate_passes_fused_qdq_and_refuses_a_lone_pair(monkeypatch, tmp_path, flavour, version):
    install_fake(monkeypatch, version=version, flavour=flavour)
    settings = BuildSettings(profile=PROFILE)
    shapes = {"x": PROFILE["x"][1]}
    fused = trt_build.build_serialized_engine(_qdq_conv(tmp_path / "fused.onnx", True), settings)
    summary = trt_inspect.inspect_plan(fused, shapes)
    assert summary.int8_conv == 1 and summary.unknown == 0
    trt_inspect.check_engine_precision(summary, "int8", "fused.int8.plan")
    lone = trt_build.build_serialized_engine(_qdq_conv(tmp_path / "lone.onnx", False), settings)
    summary = trt_inspect.inspect_plan(lone, shapes)
    assert summary.int8 == 2 and summary.int8_conv == 0  # the old gate (any int8 layer) passed this
    with pytest.raises(EnginePrecisionError, match="no int8 convolution"):
        trt_inspect.check_engine_precision(summary, "int8", "lone.int8.plan")


def test_invalid_profile_is_a_typed_one_line_error(fake_trt, tmp_path):
    path = _qdq_conv(tmp_path / "g.onnx", True)
    bad = BuildSettings(profile={"x": ((1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 16, 16))})  # min > max
    with pytest.raises(ShapeError) as info:
        trt_build.build_serialized_engine(path, bad)
    assert "refused the profile of input x" in str(info.value) and "\n" not in str(info.value)
    assert fake_trt.builds == 0


def test_rejected_optimisation_profile_stops_the_build(fake_trt, tmp_path, monkeypatch):
    path = _qdq_conv(tmp_path / "g.onnx", True)
    from tests.export import trt_fake

    monkeypatch.setattr(trt_fake.FakeBuilderConfig, "add_optimization_profile", lambda self, profile: -1)
    with pytest.raises(ShapeError, match="refused the optimisation profile"):
        trt_build.build_serialized_engine(path, BuildSettings(profile=PROFILE))
    assert fake_trt.builds == 0


def test_inspector_step_checks_set_input_shape(fake_trt, tmp_path):
    plan = trt_build.build_serialized_engine(_qdq_conv(tmp_path / "g.onnx", True), BuildSettings(profile=PROFILE))
    with pytest.raises(ShapeError, match=r"refused input x at its opt shape \(1, 3, 128, 128\)"):
        trt_inspect.inspect_plan(plan, {"x": (1, 3, 128, 128)})


def test_verbose_messages_are_dropped_before_logging_sees_them(fake_trt, tmp_path, monkeypatch, caplog):
    seen = []
    monkeypatch.setattr(trt_env.log, "log", lambda level, *args: seen.append(level))
    with caplog.at_level(logging.INFO, logger=trt_env.log.name):
        trt_build.build_serialized_engine(_qdq_conv(tmp_path / "g.onnx", True), BuildSettings(profile=PROFILE))
    assert any(sev == 4 for sev, _ in fake_trt.log_messages)  # TensorRT sent VERBOSE chatter
    assert logging.DEBUG not in seen  # ... which never reached the logging call
    seen.clear()
    with caplog.at_level(logging.DEBUG, logger=trt_env.log.name):
        trt_build.build_serialized_engine(_qdq_conv(tmp_path / "h.onnx", True), BuildSettings(profile=PROFILE))
    assert logging.DEBUG in seen
