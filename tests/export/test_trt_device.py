"""The TensorRT runtime against the double's device model (FakeCuda: devices, streams, lifetime,
CUDA graphs) and its portable-plan rules. NOT TensorRT and NOT CUDA: these tests prove the call
protocol issue 16 found wrong; tests/gpu proves it on a GPU.
"""
from __future__ import annotations

import gc
import json
import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rsd_deploy.backends import trt_env
from rsd_deploy.backends.base import create_backend
from rsd_deploy.backends.trt_plans import check_engine
from rsd_deploy.backends.trt_runtime import EngineRunner
from rsd_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError
from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines
from tests.export.trt_fixtures import (  # noqa: F401
    _toy_bundle_template, fake_trt, install_fake, no_cuda_violations, toy_bundle,
)

H100 = ("NVIDIA H100 80GB HBM3", (9, 0), False)
ORIN = ("Orin", (8, 7), True)


def _ort(path):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _encoder_plan(fake, folder, **options):
    (plan,) = build_engines(folder, ["fp32"], EngineBuildOptions(submodels=("encoder",), **options))
    return plan


def _image(seed, h, w):
    return torch.rand(1, 3, 4 * h, 4 * w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_engine_lives_and_runs_on_the_backend_device(monkeypatch, toy_bundle):
    fake = install_fake(monkeypatch, gpus=[H100, H100])
    build_engines(toy_bundle, ["fp32"])  # built on device 0
    fake.calls.clear()
    backend = create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32", device="cuda:1")
    assert fake.cuda.current == 0  # the caller's current device is left as it was
    image = fake.cuda.to_device(_image(0, 16, 16), "cuda:1")
    latent = backend.encode(image)
    assert {c["device"] for c in fake.called("deserialize_cuda_engine")} == {1}
    assert {c["device"] for c in fake.called("create_execution_context")} == {1}
    assert fake.cuda.find(latent).device == 1
    backend.close()


def test_a_device_that_does_not_exist_is_refused(fake_trt, toy_bundle):
    build_engines(toy_bundle, ["fp32"])
    with pytest.raises(ConfigError, match=r"'cuda:3' does not exist: this machine has 1 CUDA device"):
        create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32", device="cuda:3")


@pytest.mark.parametrize("flavour, version", [("10", "10.13.0.35"), ("11", "11.4.0.5")])
def test_cuda_graphs_across_shapes_match_plain_runs_bit_exactly(monkeypatch, toy_bundle, flavour, version):
    fake = install_fake(monkeypatch, version=version, flavour=flavour)
    plan = _encoder_plan(fake, toy_bundle).read_bytes()
    dev = torch.device("cuda", 0)
    graphs, plain = EngineRunner(plan, dev, cuda_graphs=True), EngineRunner(plan, dev, cuda_graphs=False)
    reference = _ort(toy_bundle / "encoder.onnx")
    shapes = [(16, 16), (16, 32), (16, 16), (16, 16)]  # A -> B -> A (captured again) -> A (replayed)
    for i, (h, w) in enumerate(shapes):
        image = _image(i, h, w)
        a = graphs.run({"image": fake.cuda.to_device(image)})["latent"]
        b = plain.run({"image": fake.cuda.to_device(image)})["latent"]
        (ref,) = reference.run(None, {"image": image.numpy()})
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(a.numpy(), ref)
    assert fake.cuda.captures == ["thread_local"] * 3  # one capture per shape change, thread-local mode
    assert graphs._graph is not None and graphs._graph.replays == 1
    graphs.close()
    plain.close()


def test_a_failed_capture_falls_back_to_plain_runs(fake_trt, toy_bundle, caplog, monkeypatch):
    plan = _encoder_plan(fake_trt, toy_bundle).read_bytes()
    runner = EngineRunner(plan, torch.device("cuda", 0), name="encoder", cuda_graphs=True)
    fake_trt.fail_capture = True  # execute_async_v3 returns False inside the capture
    image = _image(3, 16, 16)
    # a CLI test may have run setup_logging (rsd_deploy: quiet, not propagating)
    monkeypatch.setattr(logging.getLogger("rsd_deploy"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="rsd_deploy.backends.trt_runtime"):
        out = runner.run({"image": fake_trt.cuda.to_device(image)})["latent"]
    assert "CUDA graph capture failed" in caplog.text and runner.cuda_graphs is False
    (ref,) = _ort(toy_bundle / "encoder.onnx").run(None, {"image": image.numpy()})
    np.testing.assert_array_equal(out.numpy(), ref)
    np.testing.assert_array_equal(runner.run({"image": fake_trt.cuda.to_device(image)})["latent"].numpy(), ref)
    runner.close()


def test_callers_inputs_may_be_freed_right_after_run(fake_trt, toy_bundle):
    plan = _encoder_plan(fake_trt, toy_bundle).read_bytes()
    runner = EngineRunner(plan, torch.device("cuda", 0))
    feed = fake_trt.cuda.to_device(_image(1, 16, 16))  # made on the caller's stream
    out = runner.run({"image": feed})["latent"]
    del feed  # read on the runner's stream: record_stream keeps the block until that work is done
    gc.collect()
    assert not fake_trt.cuda.violations
    runner.close()
    assert ("synchronize", runner._stream.handle) in fake_trt.cuda.calls
    del runner, out


def test_the_double_catches_a_missing_record_stream_and_close_without_sync(fake_trt, toy_bundle, monkeypatch):
    """What the old runner did: proof that the device model would have failed it."""
    plan = _encoder_plan(fake_trt, toy_bundle).read_bytes()
    runner = EngineRunner(plan, torch.device("cuda", 0))
    monkeypatch.setattr(fake_trt.cuda, "record_stream", lambda tensor, stream: None)
    feed = fake_trt.cuda.to_device(_image(1, 16, 16))
    runner.run({"image": feed})
    del feed
    gc.collect()
    assert any("use-after-free" in v for v in fake_trt.cuda.violations)
    fake_trt.cuda.violations.clear()
    runner.run({"image": fake_trt.cuda.to_device(_image(2, 16, 16))})
    monkeypatch.setattr(runner._stream, "synchronize", lambda: None)
    runner.close()
    gc.collect()
    assert any("released while its work" in v for v in fake_trt.cuda.violations)
    fake_trt.cuda.violations.clear()


def test_host_pointers_are_not_device_memory(fake_trt, toy_bundle):
    plan = _encoder_plan(fake_trt, toy_bundle).read_bytes()
    runner = EngineRunner(plan, torch.device("cuda", 0))
    host = torch.zeros(1, 3, 64, 64)
    assert runner.context.set_tensor_address("image", host.data_ptr()) is False
    assert fake_trt.cuda.violations == [f"set_tensor_address(image): {host.data_ptr():#x} is not device memory"]
    fake_trt.cuda.violations.clear()
    runner.close()


# ----------------------------------------------------------------------------- portable plans


def test_version_compatible_plan_needs_host_code(fake_trt, toy_bundle):
    plan = _encoder_plan(fake_trt, toy_bundle, version_compatible=True).read_bytes()
    from rsd_deploy.backends.trt_plans import PlanRuntime

    with pytest.raises(EngineMismatchError):  # the old runtime: no host code -> refused
        EngineRunner(plan, torch.device("cuda", 0))
    EngineRunner(plan, torch.device("cuda", 0), needs=PlanRuntime(host_code=True)).close()


def test_lean_runtime_free_plan_loads_through_load_runtime(monkeypatch, toy_bundle):
    fake = install_fake(monkeypatch)
    fake.lean_libraries["libnvinfer_lean.so.10"] = "10.13.0.35"
    build_engines(toy_bundle, ["fp32"], EngineBuildOptions(version_compatible=True, exclude_lean_runtime=True))
    newer = install_fake(monkeypatch, version="10.14.1.48")  # a newer full TensorRT on the target
    newer.lean_libraries["/opt/lean/libnvinfer_lean.so.10"] = "10.13.0.35"
    with pytest.raises(BackendUnavailableError, match=r"could not load the lean runtime libnvinfer_lean\.so\.10"):
        create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32")
    backend = create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32",
                             lean_runtime="/opt/lean/libnvinfer_lean.so.10")
    loads = newer.called("deserialize_cuda_engine")[-3:]
    assert all(c["lean"] == "10.13.0.35" and c["host_code"] for c in loads)
    image = newer.cuda.to_device(_image(4, 16, 16))
    (ref,) = _ort(toy_bundle / "encoder.onnx").run(None, {"image": image.numpy()})
    np.testing.assert_array_equal(backend.encode(image).numpy(), ref)
    backend.close()


def test_hardware_compatible_plans_are_refused_on_jetson(monkeypatch, toy_bundle):
    install_fake(monkeypatch)
    (plan,) = build_engines(toy_bundle, ["fp32"], EngineBuildOptions(submodels=("decoder",), hardware_compatible=True))
    orin = trt_env.GpuIdentity("Orin", (8, 7), integrated=True)
    with pytest.raises(EngineMismatchError) as info:
        check_engine(plan, tensorrt_version="10.13.0.35", gpu=orin)
    assert "not supported on JetPack / DRIVE OS" in str(info.value) and "\n" not in str(info.value)
    check_engine(plan, tensorrt_version="10.13.0.35", gpu=trt_env.GpuIdentity("NVIDIA A100", (8, 0)))
    fake = install_fake(monkeypatch, gpus=[ORIN])
    with pytest.raises(ConfigError, match="not supported on JetPack / DRIVE OS.*build without hardware_compatible"):
        build_engines(toy_bundle, ["fp32"], EngineBuildOptions(hardware_compatible=True, force=True))
    assert fake.builds == 0


def test_hardware_compatible_sidecar_for_jetson_names_it(monkeypatch, toy_bundle):
    install_fake(monkeypatch)
    build_engines(toy_bundle, ["fp32"], EngineBuildOptions(hardware_compatible=True))
    install_fake(monkeypatch, gpus=[ORIN])
    with pytest.raises(EngineMismatchError, match="hardware-compatible TensorRT plans are not supported on JetPack"):
        create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32")
    manifest = json.loads((toy_bundle / "manifest.json").read_text())
    assert manifest["engines"]["decoder"]["fp32"]["cache_key"]["build"]["hardware_compatible"] is True
