"""TensorRT runtime wrapper and backend, driven through FakeTensorRT (recording test double, NOT TensorRT).

The double executes a "plan" by running its ONNX with ONNX Runtime on the memory behind the raw
addresses the code bound (CPU tensors stand in for CUDA memory), so these tests check the data
plumbing numerically: shapes, an address for every I/O tensor, buffers reused per shape, the
z_t feed of the one-step denoiser (the prior sample as Backend.denoise gets it). Stale or foreign engines must be
refused from their sidecar before anything is deserialised.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rsd_deploy.backends import trt_backend
from rsd_deploy.backends.base import create_backend
from rsd_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ShapeError
from rsd_deploy.backends import trt_env
from rsd_deploy.backends.trt_runtime import EngineRunner
from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines, check_engine
from tests.export.trt_fixtures import (  # noqa: F401
    _toy_bundle_template, fake_trt, install_fake, no_cuda_violations, toy_bundle,
)

H100 = trt_env.GpuIdentity("NVIDIA H100 80GB HBM3", (9, 0))


CUDA0 = torch.device("cuda", 0)


def _ort(folder, name):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])


def _inputs(seed=0, h=16, w=32):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(1, 3, 4 * h, 4 * w, generator=g) * 2 - 1,
        "z": torch.randn(1, 3, h, w, generator=g),
        "lq": torch.rand(1, 3, h, w, generator=g) * 2 - 1,
        "noise": torch.randn(1, 1, h, w, generator=g),
    }


def test_backend_matches_onnxruntime_on_the_same_graphs(fake_trt, toy_bundle):
    build_engines(toy_bundle, ["fp32"], EngineBuildOptions(workspace_gib=1.0))
    backend = create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32", device="cuda")
    x = _inputs()
    latent = backend.encode(x["image"])
    x0 = backend.denoise(x["z"], 14, x["lq"], x["noise"])
    image = backend.decode(x0)

    ref_latent, = _ort(toy_bundle, "encoder.onnx").run(None, {"image": x["image"].numpy()})
    # the pipeline hands over z_T and the graph takes it as it is
    ref_x0, = _ort(toy_bundle, "denoiser.onnx").run(None, {
        "z_t": x["z"].numpy(), "lq": x["lq"].numpy(), "noise": x["noise"].numpy()})
    ref_image, = _ort(toy_bundle, "decoder.onnx").run(None, {"latent": ref_x0})
    np.testing.assert_array_equal(latent.numpy(), ref_latent)
    np.testing.assert_array_equal(x0.numpy(), ref_x0)
    np.testing.assert_array_equal(image.numpy(), ref_image)
    assert latent.dtype == torch.float32 and image.shape == (1, 3, 64, 128)
    assert backend.model_info.kind.value == "rsd" and backend.model_info.input_multiple == 16
    assert backend.supported_steps == frozenset({14})
    assert backend.engine_precisions == {"encoder": "fp32", "denoiser": "fp32", "decoder": "fp32"}


def test_every_io_tensor_is_bound_once_per_shape(fake_trt, toy_bundle):
    build_engines(toy_bundle, ["fp32"], EngineBuildOptions(submodels=("encoder", "denoiser", "decoder")))
    backend = create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32")
    runner = backend.runners["denoiser"]
    before = len(fake_trt.called("set_tensor_address"))
    a, b = _inputs(0), _inputs(1)
    out_a = backend.denoise(a["z"], 14, a["lq"], a["noise"])
    bound = fake_trt.called("set_tensor_address")[before:]
    assert sorted(c["name"] for c in bound) == sorted(["z_t", "lq", "noise", "x0"])
    out_b = backend.denoise(b["z"], 14, b["lq"], b["noise"])
    assert len(fake_trt.called("set_tensor_address")) == before + 4  # same shape: buffers and bindings reused
    assert not torch.equal(out_a, out_b)  # outputs are copies, not the reused buffer
    assert len(runner._buffers) == 1
    c = _inputs(2, h=32, w=16)
    backend.denoise(c["z"], 14, c["lq"], c["noise"])
    assert len(runner._buffers) == 2 and len(fake_trt.called("set_tensor_address")) == before + 8
    # back to the first shape: rebinds its own buffers, allocates nothing new
    backend.denoise(a["z"], 14, a["lq"], a["noise"])
    assert len(runner._buffers) == 2
    np.testing.assert_array_equal(backend.denoise(a["z"], 14, a["lq"], a["noise"]).numpy(), out_a.numpy())


def test_backend_refuses_what_the_graph_cannot_do(fake_trt, toy_bundle):
    build_engines(toy_bundle, ["fp32"])
    backend = create_backend("tensorrt", model_dir=toy_bundle, precision="fp32")
    x = _inputs()
    with pytest.raises(ConfigError, match="runs only step 14"):
        backend.denoise(x["z"], 3, x["lq"], x["noise"])
    with pytest.raises(ShapeError, match="needs an RSD noise map"):
        backend.denoise(x["z"], 14, x["lq"], None)
    big = torch.zeros(1, 3, 4 * 1040, 4 * 16)  # latent 1040 > profile max 256
    with pytest.raises(ShapeError, match=r"input image shape \(1, 3, 4160, 64\) is outside the engine profile"):
        backend.encode(big)


def test_precision_falls_back_to_the_next_higher_engine(fake_trt, toy_bundle):
    build_engines(toy_bundle, ["fp32", "fp16"])
    backend = create_backend("tensorrt", engine_dir=toy_bundle, precision="int8")
    assert backend.engine_precisions == {"encoder": "fp16", "denoiser": "fp16", "decoder": "fp16"}
    x = _inputs()
    ref, = _ort(toy_bundle, "encoder.fp16.onnx").run(None, {"image": x["image"].numpy()})
    np.testing.assert_array_equal(backend.encode(x["image"]).numpy(), ref)


def test_missing_engines_name_the_build_command(fake_trt, toy_bundle):
    with pytest.raises(BackendUnavailableError, match=f"rsd-export --build-engine {toy_bundle}"):
        create_backend("tensorrt", engine_dir=toy_bundle, precision="fp16")


def test_backend_needs_cuda(monkeypatch, fake_trt, toy_bundle):
    with pytest.raises(ConfigError, match="CUDA GPU"):
        create_backend("tensorrt", engine_dir=toy_bundle, device="cpu")
    fake_trt.cuda.gpus = []  # torch.cuda.is_available() is False
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        create_backend("tensorrt", engine_dir=toy_bundle, device="cuda")


# ----------------------------------------------------------------------------- stale / foreign engines


def _one_engine(fake, folder, **options):
    (plan,) = build_engines(folder, ["fp32"], EngineBuildOptions(submodels=("decoder",), **options))
    fake.deserialized = 0
    return plan


@pytest.mark.parametrize("installed, gpu, needle", [
    ("10.14.1.48", H100, "built with TensorRT 10.13.0.35 but 10.14.1.48 is installed"),
    ("10.13.0.35", trt_env.GpuIdentity("NVIDIA A100-SXM4-80GB", (8, 0)),
     "built for NVIDIA H100 80GB HBM3 (sm90) but this GPU is NVIDIA A100-SXM4-80GB (sm80)"),
    ("10.13.0.35", trt_env.GpuIdentity("NVIDIA H200", (9, 0)), "but this GPU is NVIDIA H200 (sm90)"),
])
def test_foreign_engine_is_refused_before_deserialising(monkeypatch, toy_bundle, installed, gpu, needle):
    install_fake(monkeypatch)
    build_engines(toy_bundle, ["fp32"])
    fake = install_fake(monkeypatch, version=installed, gpu=(gpu.name, gpu.compute_capability))
    with pytest.raises(EngineMismatchError) as info:
        create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32")
    message = str(info.value)
    assert needle in message and f"rebuild with `rsd-export --build-engine {toy_bundle}`" in message
    assert "\n" not in message and info.value.exit_code == 8
    assert fake.deserialized == 0 and not fake.called("deserialize_cuda_engine")


def test_changed_onnx_or_plan_makes_an_engine_stale(fake_trt, toy_bundle):
    plan = _one_engine(fake_trt, toy_bundle)
    check_engine(plan, tensorrt_version="10.13.0.35", gpu=H100, onnx_sha256=None)  # fine as built
    with pytest.raises(EngineMismatchError, match="ONNX graph changed"):
        check_engine(plan, tensorrt_version="10.13.0.35", gpu=H100, onnx_sha256="0" * 64)
    plan.write_bytes(plan.read_bytes() + b" ")
    with pytest.raises(EngineMismatchError, match="does not match its sidecar"):
        check_engine(plan, tensorrt_version="10.13.0.35", gpu=H100)
    plan.with_name(plan.name + ".json").unlink()
    with pytest.raises(EngineMismatchError, match="no readable sidecar"):
        check_engine(plan, tensorrt_version="10.13.0.35", gpu=H100)
    assert fake_trt.deserialized == 0


def test_rebuilt_onnx_makes_the_bundle_engines_stale(fake_trt, toy_bundle):
    _one_engine(fake_trt, toy_bundle)
    build_engines(toy_bundle, ["fp32"], EngineBuildOptions(submodels=("encoder", "denoiser")))
    manifest = json.loads((toy_bundle / "manifest.json").read_text())
    manifest["graphs"]["decoder"]["variants"]["fp32"]["sha256"] = "f" * 64  # as after a re-export
    (toy_bundle / "manifest.json").write_text(json.dumps(manifest))
    fake_trt.deserialized = 0
    with pytest.raises(EngineMismatchError, match=r"decoder\.fp32\..*ONNX graph changed"):
        create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32")


def test_compatible_plans_load_where_they_are_meant_to(monkeypatch, toy_bundle):
    fake = install_fake(monkeypatch)
    plan = _one_engine(fake, toy_bundle, version_compatible=True, hardware_compatible=True)
    a100 = trt_env.GpuIdentity("NVIDIA A100-SXM4-80GB", (8, 0))
    check_engine(plan, tensorrt_version="11.4.0.5", gpu=a100)  # newer TensorRT, other sm80+ GPU: fine
    with pytest.raises(EngineMismatchError, match="newer than the installed 10.12.0.36"):
        check_engine(plan, tensorrt_version="10.12.0.36", gpu=H100)
    with pytest.raises(EngineMismatchError, match="need an sm80\\+ GPU"):
        check_engine(plan, tensorrt_version="10.13.0.35", gpu=trt_env.GpuIdentity("Tesla T4", (7, 5)))


def test_version_compatible_plan_with_lean_runtime_allows_host_code(fake_trt, toy_bundle):
    build_engines(toy_bundle, ["fp32"], EngineBuildOptions(version_compatible=True))
    fake_trt.calls.clear()
    create_backend("tensorrt", engine_dir=toy_bundle, precision="fp32")
    assert [c["host_code"] for c in fake_trt.called("deserialize_cuda_engine")] == [True] * 3


# ----------------------------------------------------------------------------- EngineRunner, 10.x vs 11.x


@pytest.mark.parametrize("version, flavour", [("10.13.0.35", "10"), ("11.4.0.5", "11")])
def test_runner_on_both_api_generations(monkeypatch, toy_bundle, version, flavour):
    fake = install_fake(monkeypatch, version=version, flavour=flavour)
    (plan,) = build_engines(toy_bundle, ["fp16"], EngineBuildOptions(submodels=("encoder",)))
    runner = EngineRunner(plan.read_bytes(), CUDA0, name="encoder.fp16", cuda_graphs=True)
    assert runner.device_memory_bytes == 1 << 20  # device_memory_size_v2 on both
    assert runner.input_names == ["image"] and runner.output_names == ["latent"]
    assert runner.profile_shapes("image")[2] == (4, 3, 1024, 1024)
    image = torch.rand(2, 3, 64, 96) * 2 - 1
    out = runner.run({"image": image})["latent"]
    ref, = _ort(toy_bundle, "encoder.fp16.onnx").run(None, {"image": image.numpy()})
    np.testing.assert_array_equal(out.numpy(), ref)
    with pytest.raises(ShapeError, match=r"engine inputs are \['image'\]"):
        runner.run({"latent": image})
    runner.close()


def test_plan_from_another_version_fails_to_deserialise_cleanly(monkeypatch, toy_bundle):
    fake = install_fake(monkeypatch)
    (plan,) = build_engines(toy_bundle, ["fp32"], EngineBuildOptions(submodels=("encoder",)))
    install_fake(monkeypatch, version="10.14.1.48")
    with pytest.raises(EngineMismatchError, match="could not deserialise"):
        EngineRunner(plan.read_bytes(), CUDA0)
    assert fake.builds == 1
