"""Real TensorRT engines for the tiny fixtures: build, parity with ONNX Runtime, cache, backend.

Needs a CUDA GPU and TensorRT >= 10.12 (skipped otherwise). Run on a GPU machine with:

    pip install -e .[trt,dev] && pytest tests/gpu -m "gpu or trt"

These are the tests that prove engines build and run; tests/export/test_trt_*.py only prove the
wrapper logic against a recording test double.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rsd_deploy.backends.trt_env import tensorrt_status

pytestmark = [pytest.mark.gpu, pytest.mark.trt]

_AVAILABLE, _REASON = tensorrt_status()
if not _AVAILABLE:  # e.g. tensorrt-stubs only: importable, but no runtime
    pytest.skip(f"TensorRT unusable: {_REASON}", allow_module_level=True)

from rsd_deploy.backends.base import create_backend  # noqa: E402
from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines  # noqa: E402
from rsd_deploy.export.trt_verify import VerifyOptions, verify_engines  # noqa: E402

OPTIONS = EngineBuildOptions(workspace_gib=2.0, optimization_level=2)


@pytest.fixture(scope="module")
def engines(exported):
    paths = build_engines(exported, ["fp32", "fp16"], OPTIONS)
    return exported, paths


def _ort(path, feeds):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, feeds)
    return out


def test_fp32_and_fp16_engines_build_with_the_right_precision(engines):
    folder, paths = engines
    assert len(paths) == 6 and all(p.is_file() for p in paths)
    manifest = json.loads((folder / "manifest.json").read_text())
    for path in paths:
        submodel, precision = path.name.split(".")[:2]
        assert manifest["engines"][submodel][precision]["file"] == path.name
        layers = json.loads(path.with_name(path.name + ".json").read_text())["layer_precisions"]
        if precision == "fp16":
            assert layers["half"] > 0, layers  # build_engines already enforces >= 10 %
        else:
            assert layers["half"] == 0, layers


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 32, 48)])  # the export shape and a non-square batch
def test_fp32_engines_match_onnxruntime(engines, shape):
    folder, _ = engines
    backend = create_backend("tensorrt", engine_dir=folder, precision="fp32")
    manifest = backend.manifest
    for submodel, runner in backend.runners.items():
        spec = backend.specs[submodel]
        feeds = spec.dummy_inputs(*shape, seed=1)
        out = runner.run({k: torch.from_numpy(v) for k, v in feeds.items()})
        (got,) = out.values()
        ref = _ort(folder / manifest["graphs"][submodel]["variants"]["fp32"]["file"], feeds)
        error = np.abs(got.float().cpu().numpy() - ref)
        if submodel == "decoder":  # fp32 argmin near-ties may pick another code: compare typical error
            assert float(np.median(error)) < 1e-3, (submodel, float(error.max()))
        else:
            assert float(error.max()) < 1e-3, (submodel, float(error.max()))
    backend.close()


def test_engines_pass_polygraphy_verification_on_real_images(engines, shared_dir):
    folder, _ = engines
    report = verify_engines(folder, VerifyOptions(precisions=("fp32", "fp16"), count=2))
    assert report.passed, report.summary_lines()
    assert (folder / "trt_verify.json").is_file()


def test_second_build_is_a_cache_hit(engines):
    folder, paths = engines
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    again = build_engines(folder, ["fp32", "fp16"], OPTIONS)
    assert again == paths
    assert {p: p.stat().st_mtime_ns for p in again} == mtimes  # nothing rebuilt or rewritten
    assert list(folder.glob("timing_cache.*.bin"))


def test_cuda_graphs_replay_the_same_result(engines):
    folder, _ = engines
    backend = create_backend("tensorrt", engine_dir=folder, precision="fp16", cuda_graphs=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.randn(1, 3, 64, 64, device="cuda", generator=g)
    lq = torch.rand(1, 3, 64, 64, device="cuda", generator=g) * 2 - 1
    noise = torch.randn(1, 1, 64, 64, device="cuda", generator=g)
    step = backend.timestep
    first = backend.denoise(z, step, lq, noise)  # plain run, then capture
    assert backend.runners["denoiser"]._graphs, "no CUDA graph was captured"
    second = backend.denoise(z, step, lq, noise)  # replay
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    other = backend.denoise(z + 0.1, step, lq, noise)
    assert not torch.equal(other, first)  # replay reads the new inputs
    backend.close()


def test_pipeline_on_engines_matches_pytorch(engines, tiny_rsd, tiny_vq):
    from rsd_deploy.models import Schedule
    from rsd_deploy.pipeline.loading import ModelSource, resolve_backend
    from rsd_deploy.pipeline.sr_pipeline import SRPipeline
    from rsd_deploy.types import ModelInfo, ModelKind, TileConfig

    folder, _ = engines
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(80, 96, 3), dtype=np.uint8)
    tiling = TileConfig(tile=64, overlap=16)
    trt_backend, info = resolve_backend(ModelSource(engine_dir=folder, precision="fp32", device="cuda"))
    assert info.kind is ModelKind.RSD and info.input_multiple == 16
    sr_trt = SRPipeline(trt_backend, info, tiling, seed=3).upscale_array(rgb)
    schedule = Schedule.preset("v1")
    torch_backend = create_backend("torch", unet=tiny_rsd, vq=tiny_vq, schedule=schedule, device="cuda")
    torch_info = ModelInfo(kind=ModelKind.RSD, schedule=schedule, input_multiple=16, noise_channels=1)
    sr_torch = SRPipeline(torch_backend, torch_info, tiling, seed=3).upscale_array(rgb)
    mse = float(np.mean((sr_trt.astype(np.float64) - sr_torch) ** 2))
    psnr = 10 * np.log10(4.0 / max(mse, 1e-20))  # images in [-1, 1]: peak-to-peak 2
    assert psnr >= 40.0, psnr


def test_int8_engines_have_int8_layers(exported):
    paths = build_engines(exported, ["int8"], OPTIONS)
    for path in paths:
        layers = json.loads(path.with_name(path.name + ".json").read_text())["layer_precisions"]
        assert layers["int8"] > 0, (path.name, layers)
