"""The TensorRT runtime rules of issue 16 on a real GPU (tests/export/test_trt_device.py checks the
same protocol against the test double). Needs CUDA; the engine tests also TensorRT >= 10.12 and
skip with the reason without it. Run: pytest tests/gpu -m "gpu or trt" (benchmarks/gpu_check.sh)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rsd_deploy.backends import trt_env

# --------------------------------------------------------------- torch-CUDA seam (no TensorRT needed)


@pytest.mark.gpu
def test_torch_cuda_seam_captures_thread_local_and_replays():
    cuda = trt_env.CUDA
    dev = torch.device("cuda", 0)
    stream = cuda.new_stream(dev)
    x = cuda.empty((4, 8), torch.float32, dev).normal_()
    with cuda.use_stream(stream):
        y = cuda.empty((4, 8), torch.float32, dev)
    stream.wait_stream(cuda.current_stream(dev))
    graph = cuda.new_graph()
    with cuda.capture(graph, stream, "thread_local"):
        torch.mul(x, 2.0, out=y)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y, x * 2, rtol=0, atol=0)
    cuda.record_stream(x, stream)  # accepted for CUDA tensors
    name, capability, integrated = cuda.properties(0)
    assert name == torch.cuda.get_device_name(0) and capability >= (7, 0) and integrated is False


# --------------------------------------------------------------- real engines

_AVAILABLE, _REASON = trt_env.tensorrt_status()
trt_only = pytest.mark.skipif(not _AVAILABLE, reason=f"TensorRT unusable: {_REASON}")


@pytest.fixture(scope="module")
def trt_exported(exported):
    if not _AVAILABLE:
        pytest.skip(f"TensorRT unusable: {_REASON}")
    return exported


@pytest.fixture(scope="module")
def built(trt_exported):
    from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines

    build_engines(trt_exported, ["fp32", "fp16", "int8"], EngineBuildOptions(workspace_gib=2.0, optimization_level=2))
    return trt_exported


def _encoder_runner(folder, precision, device, cuda_graphs):
    from rsd_deploy.backends.trt_plans import PlanRuntime, check_engine
    from rsd_deploy.backends.trt_runtime import EngineRunner

    manifest = json.loads((folder / "manifest.json").read_text())
    plan = folder / manifest["engines"]["encoder"][precision]["file"]
    sidecar = check_engine(plan, tensorrt_version=trt_env.tensorrt_version(), gpu=trt_env.current_gpu(device.index))
    return EngineRunner(plan.read_bytes(), device, needs=PlanRuntime.from_sidecar(sidecar), cuda_graphs=cuda_graphs)


@pytest.mark.trt
@trt_only
def test_tile_shapes_a_b_a_with_and_without_cuda_graphs_are_bit_exact(built):
    dev = torch.device("cuda", 0)
    graphs, plain = _encoder_runner(built, "fp32", dev, True), _encoder_runner(built, "fp32", dev, False)
    g = torch.Generator(device="cuda").manual_seed(0)
    for h, w in [(64, 64), (64, 128), (64, 64), (64, 64)]:  # A -> B -> A (re-captured) -> A (replayed)
        image = torch.rand(1, 3, h, w, device=dev, generator=g) * 2 - 1
        a = graphs.run({graphs.input_names[0]: image})
        b = plain.run({plain.input_names[0]: image})
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert graphs.cuda_graphs, "capture fell back to plain runs"
    graphs.close()
    plain.close()


@pytest.mark.trt
@trt_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA device")
def test_backend_on_the_second_device(built):
    from rsd_deploy.backends.base import create_backend

    backend = create_backend("tensorrt", engine_dir=built, precision="fp32", device="cuda:1")
    image = torch.rand(1, 3, 64, 64, device="cuda:1") * 2 - 1
    latent = backend.encode(image)
    assert latent.device == torch.device("cuda", 1) and torch.cuda.current_device() == 0
    backend.close()


@pytest.mark.trt
@trt_only
def test_fp16_and_int8_inspector_summaries(built):
    manifest = json.loads((built / "manifest.json").read_text())
    for submodel, entries in manifest["engines"].items():
        for precision, entry in entries.items():
            sidecar = json.loads((built / (entry["file"] + ".json")).read_text())
            summary = sidecar["layer_precisions"]
            assert summary["unknown"] < summary["layers"], (submodel, precision, summary)
            if precision == "fp16":
                assert summary["half_share"] >= 0.10, (submodel, summary)
            if precision == "int8":
                assert summary["int8_conv"] >= 1, (submodel, summary)  # Q/DQ fused into convolutions


@pytest.mark.trt
@trt_only
def test_verify_with_the_installed_polygraphy(built, shared_dir):
    from rsd_deploy.export.trt_verify import VerifyOptions, verify_engines

    report = verify_engines(built, VerifyOptions(precisions=("fp32", "fp16"), count=2, latent_size=32))
    assert report.passed, report.failures()


@pytest.mark.trt
@trt_only
def test_version_compatible_plans_load_in_the_python_backend(trt_exported, tmp_path):
    import shutil

    from rsd_deploy.backends.base import create_backend
    from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines

    folder = tmp_path / "vc"
    shutil.copytree(trt_exported, folder)
    build_engines(folder, ["fp32"], EngineBuildOptions(version_compatible=True, workspace_gib=2.0, force=True))
    backend = create_backend("tensorrt", engine_dir=folder, precision="fp32")
    image = torch.rand(1, 3, 64, 64, device="cuda") * 2 - 1
    assert torch.isfinite(backend.decode(backend.encode(image))).all()
    backend.close()
