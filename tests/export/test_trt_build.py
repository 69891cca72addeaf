"""Engine build orchestration, driven through FakeTensorRT (a recording test double, NOT TensorRT).

These tests prove the build recipe (strong typing, profiles, flags, timing cache, inspector
check), the cache key and file naming, atomic outputs and the error paths. They do not prove that
TensorRT builds or runs these engines: tests/gpu/test_trt_engines.py does, on a GPU.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import types

import pytest

from rsd_deploy.errors import (
    BackendUnavailableError,
    ConfigError,
    EnginePrecisionError,
    ExportError,
    ShapeError,
)
from rsd_deploy.backends import trt_env
from rsd_deploy.export.engine_build import (
    EngineBuildOptions,
    build_engines,
    engine_cache_key,
    engine_file_name,
    key_digest,
    tensorrt_status,
)
from rsd_deploy.bundle.specs import ShapeProfile
from rsd_deploy.fileio import sha256_file
from rsd_deploy.export.trt_build import BuilderFlags, BuildSettings
from tests.export.trt_fixtures import (  # noqa: F401
    _toy_bundle_template, fake_trt, install_fake, no_cuda_violations, toy_bundle,
)
from tests.export.trt_toy_bundle import toy_specs

SMALL = EngineBuildOptions(workspace_gib=2.0, optimization_level=2)
PLAN_NAME = re.compile(r"^(encoder|denoiser|decoder)\.(fp32|fp16)\.sm90\.trt10\.13\.[0-9a-f]{8}\.plan$")


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_build_records_strongly_typed_recipe(fake_trt, toy_bundle):
    paths = build_engines(toy_bundle, ["fp32", "fp16"], SMALL)

    assert len(paths) == 6 and all(PLAN_NAME.match(p.name) for p in paths)
    assert all(p.is_file() and p.with_name(p.name + ".json").is_file() for p in paths)
    # strongly typed network on 10.x: 1 << STRONGLY_TYPED (= 1)
    assert {c["flags"] for c in fake_trt.called("create_network")} == {1 << 1}
    builds = fake_trt.called("build_serialized_network")
    assert len(builds) == 6
    for build in builds:
        assert build["verbosity"] == fake_trt.ProfilingVerbosity.DETAILED
        assert build["level"] == 2
        assert "FP16" not in build["flags"] and "INT8" not in build["flags"]  # precision comes from the ONNX
        assert "TF32" not in build["flags"]  # cleared: an fp32 engine computes in fp32
        assert build["hardware"] == fake_trt.HardwareCompatibilityLevel.NONE
    pools = fake_trt.called("set_memory_pool_limit")
    assert {(c["pool"], c["size"]) for c in pools} == {(fake_trt.MemoryPoolType.WORKSPACE, 2 << 30)}
    assert not fake_trt.called("set_flag")
    # one profile per engine, exactly the spec's min/opt/max for every input
    specs = toy_specs()
    expected = {}
    for spec in specs.values():
        for name, shapes in spec.trt_profile().items():
            expected[name] = shapes
    for call in fake_trt.called("set_shape"):
        assert (call["min"], call["opt"], call["max"]) == expected[call["name"]]
    assert len(fake_trt.called("add_optimization_profile")) == 6
    # the inspector was read through an execution context (dynamic shapes report N/A otherwise)
    assert all(c["with_context"] for c in fake_trt.called("get_engine_information"))


def test_manifest_and_sidecars_record_the_engines(fake_trt, toy_bundle):
    paths = build_engines(toy_bundle, ["fp16"], SMALL)
    manifest = _manifest(toy_bundle)
    assert manifest["versions"]["tensorrt"] == "10.13.0.35"
    for path in paths:
        submodel, precision = path.name.split(".")[:2]
        entry = manifest["engines"][submodel][precision]
        sidecar = json.loads(path.with_name(path.name + ".json").read_text())
        assert entry["file"] == path.name and entry["sha256"] == sha256_file(path)
        assert entry["cache_key"] == sidecar["cache_key"]
        assert key_digest(entry["cache_key"])[:8] == path.name.split(".")[-2]
        key = entry["cache_key"]
        assert key["onnx_sha256"] == manifest["graphs"][submodel]["variants"]["fp16"]["sha256"]
        assert key["tensorrt"] == "10.13.0.35"
        assert key["gpu"] == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]}
        assert sidecar["layer_precisions"]["half"] > 0
    from rsd_deploy.bundle.manifest import load_manifest

    load_manifest(toy_bundle, verify_sha256=True)  # still a valid bundle, engines included


def test_second_build_is_a_cache_hit(fake_trt, toy_bundle):
    first = build_engines(toy_bundle, ["fp16"], SMALL)
    mtimes = [p.stat().st_mtime_ns for p in first]
    assert fake_trt.builds == 3
    second = build_engines(toy_bundle, ["fp16"], SMALL)
    assert second == first and fake_trt.builds == 3
    assert [p.stat().st_mtime_ns for p in second] == mtimes
    # any ingredient of the key changes the file name and forces a build
    third = build_engines(toy_bundle, ["fp16"], EngineBuildOptions(workspace_gib=2.0, optimization_level=4))
    assert fake_trt.builds == 6 and set(third).isdisjoint(first)
    forced = build_engines(toy_bundle, ["fp16"], EngineBuildOptions(workspace_gib=2.0, optimization_level=4,
                                                                    force=True))
    assert forced == third and fake_trt.builds == 9


def test_timing_cache_is_saved_per_gpu_and_version_and_reloaded(fake_trt, toy_bundle):
    build_engines(toy_bundle, ["fp32"], SMALL)
    (cache,) = toy_bundle.glob("timing_cache.*")
    assert cache.name == "timing_cache.nvidia-h100-80gb-hbm3.sm90.trt10.13.0.35.bin"
    sizes = [c["nbytes"] for c in fake_trt.called("create_timing_cache")]
    assert sizes[0] == 0 and sizes[1] > 0  # the second engine started from what the first measured
    assert cache.read_bytes().startswith(b"fake-timing-cache|10.13.0.35|") and cache.read_bytes().count(b"tactic;") == 3
    assert all(c["ignore_mismatch"] is False for c in fake_trt.called("set_timing_cache"))


@pytest.mark.parametrize("content, rejected_by", [
    (b"\x00garbage", "create_timing_cache"),  # corrupt: create_timing_cache returns None
    (b"fake-timing-cache|10.12.0.36|NVIDIA A100:80|tactic;", "set_timing_cache"),  # foreign: set returns False
])
def test_a_bad_timing_cache_is_replaced_not_fatal(fake_trt, toy_bundle, caplog, monkeypatch, content, rejected_by):
    cache = toy_bundle / "timing_cache.nvidia-h100-80gb-hbm3.sm90.trt10.13.0.35.bin"
    cache.write_bytes(content)
    # a CLI test may have run setup_logging (rsd_deploy: quiet, not propagating)
    monkeypatch.setattr(logging.getLogger("rsd_deploy"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="rsd_deploy.export.trt_build"):
        build_engines(toy_bundle, ["fp32"], EngineBuildOptions(submodels=("decoder",)))
    assert "was rejected" in caplog.text
    assert cache.read_bytes().startswith(b"fake-timing-cache|10.13.0.35|NVIDIA H100 80GB HBM3:90|")
    assert len(fake_trt.called("create_timing_cache")) == 2  # the bad one, then an empty one


def test_precision_builder_flags_would_fail_a_strongly_typed_10x_build(fake_trt, toy_bundle):
    # the double refuses what TensorRT 10.x refuses; the build never sets these flags
    build_engines(toy_bundle, ["fp16"], EngineBuildOptions(submodels=("encoder",)))
    assert not {"FP16", "INT8", "BF16"} & {c["flag"] for c in fake_trt.called("set_flag")}
    from tests.export.trt_fake import FakeBuilder

    builder = FakeBuilder(fake_trt, fake_trt.Logger())
    network = builder.create_network(1 << 1)
    network.onnx_path = str(toy_bundle / "encoder.onnx")
    config = builder.create_builder_config()
    config.set_flag(fake_trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None


def test_tensorrt_11_flavour_builds_without_the_removed_api(monkeypatch, toy_bundle):
    fake = install_fake(monkeypatch, version="11.4.0.5", flavour="11")
    paths = build_engines(toy_bundle, ["fp16"], SMALL)
    assert {c["flags"] for c in fake.called("create_network")} == {0}
    assert all(".trt11.4." in p.name for p in paths)
    sidecar = json.loads(paths[0].with_name(paths[0].name + ".json").read_text())
    assert sidecar["file"].startswith("encoder.")
    assert sidecar["io_tensors"] == ["image", "latent"]  # names of the 11.x "I/O Tensors" objects, not dict text
    assert sidecar["layer_precisions"]["unknown"] == 0  # the split "DataType" field was read


def test_compatibility_flags(fake_trt, toy_bundle):
    fake_trt.lean_libraries["libnvinfer_lean.so.10"] = "10.13.0.35"  # the build inspects the lean-free plan
    options = EngineBuildOptions(version_compatible=True, exclude_lean_runtime=True, hardware_compatible=True,
                                 tf32=True, submodels=("decoder",))
    build_engines(toy_bundle, ["fp32"], options)
    assert {c["flag"] for c in fake_trt.called("set_flag")} == {"TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"}
    (build,) = fake_trt.called("build_serialized_network")
    assert build["hardware"] == fake_trt.HardwareCompatibilityLevel.AMPERE_PLUS
    key = _manifest(toy_bundle)["engines"]["decoder"]["fp32"]["cache_key"]
    assert key["build"]["version_compatible"] and key["build"]["hardware_compatible"] and key["build"]["tf32"]


def test_profile_override_reaches_every_input(fake_trt, toy_bundle):
    profile = ShapeProfile(min=(1, 16, 16), opt=(2, 32, 48), max=(2, 64, 64))
    build_engines(toy_bundle, ["fp32"], EngineBuildOptions(profile=profile, submodels=("denoiser",)))
    calls = {c["name"]: c for c in fake_trt.called("set_shape")}
    assert set(calls) == {"z_t", "lq", "noise"}
    assert calls["noise"]["opt"] == (2, 1, 32, 48) and calls["z_t"]["max"] == (2, 3, 64, 64)


def test_profile_not_a_multiple_is_refused(fake_trt, toy_bundle):
    bad = ShapeProfile(min=(1, 16, 16), opt=(1, 24, 24), max=(1, 64, 64))
    with pytest.raises(ShapeError, match="multiple of 16"):
        build_engines(toy_bundle, ["fp32"], EngineBuildOptions(profile=bad))
    assert fake_trt.builds == 0


def test_fp16_engine_from_an_fp32_graph_fails_loudly(fake_trt, toy_bundle):
    # a graph whose Casts were lost: the "fp16" variant is really the fp32 graph
    manifest = _manifest(toy_bundle)
    manifest["graphs"]["encoder"]["variants"]["fp16"] = dict(manifest["graphs"]["encoder"]["variants"]["fp32"])
    (toy_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EnginePrecisionError, match=r"encoder\.fp16.*0/\d+ half-precision layers \(0% < 10%\)"):
        build_engines(toy_bundle, ["fp16"], EngineBuildOptions(submodels=("encoder",)))
    assert not list(toy_bundle.glob("*.plan"))  # nothing half-written
    assert _manifest(toy_bundle)["engines"] == {}


def test_failed_build_writes_nothing(fake_trt, toy_bundle):
    fake_trt.fail_build = True
    before = (toy_bundle / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="TensorRT failed to build an engine from encoder.onnx"):
        build_engines(toy_bundle, ["fp32"], SMALL)
    assert not list(toy_bundle.glob("*.plan")) and (toy_bundle / "manifest.json").read_bytes() == before


def test_parser_errors_are_reported_in_one_line(fake_trt, toy_bundle):
    broken = toy_bundle / "decoder.onnx"
    broken.write_bytes(b"not an onnx file")
    manifest = _manifest(toy_bundle)
    manifest["graphs"]["decoder"]["variants"]["fp32"]["sha256"] = sha256_file(broken)
    (toy_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError) as info:
        build_engines(toy_bundle, ["fp32"], EngineBuildOptions(submodels=("decoder",)))
    message = str(info.value)
    assert "could not parse decoder.onnx" in message and "polygraphy check lint" in message
    assert "\n" not in message


def test_missing_precision_and_bad_options(fake_trt, toy_bundle):
    with pytest.raises(ExportError, match="no int8 graphs; export them first with `rsd-export --int8"):
        build_engines(toy_bundle, ["int8"], SMALL)
    with pytest.raises(ConfigError, match="unknown engine precision"):
        build_engines(toy_bundle, ["fp64"], SMALL)
    with pytest.raises(ConfigError, match="exclude_lean_runtime only applies to version-compatible"):
        build_engines(toy_bundle, ["fp32"], EngineBuildOptions(exclude_lean_runtime=True))
    with pytest.raises(ConfigError, match="optimization level"):
        build_engines(toy_bundle, ["fp32"], EngineBuildOptions(optimization_level=7))
    assert fake_trt.builds == 0


def test_cache_key_covers_every_ingredient():
    gpu = trt_env.GpuIdentity("NVIDIA H100 80GB HBM3", (9, 0))
    settings = BuildSettings(profile={"x": ((1, 3, 16, 16), (1, 3, 64, 64), (4, 3, 256, 256))})
    base = dict(submodel="denoiser", precision="fp16", onnx_sha256="a" * 64, external_data_sha256=None,
                precision_recipe={"kept_fp32": ["Softmax"]}, checkpoints={"unet": "b" * 64, "vq": None},
                settings=settings, tensorrt_version="10.13.0.35", gpu=gpu)
    reference = key_digest(engine_cache_key(**base))
    changes = {
        "onnx_sha256": "c" * 64, "external_data_sha256": "d" * 64, "precision": "int8",
        "precision_recipe": {"kept_fp32": []}, "checkpoints": {"unet": "e" * 64, "vq": None},
        "tensorrt_version": "10.13.0.36", "gpu": trt_env.GpuIdentity("NVIDIA A100-SXM4-80GB", (8, 0)),
        "settings": BuildSettings(profile={"x": ((1, 3, 16, 16), (1, 3, 64, 64), (4, 3, 128, 128))}),
    }
    for field, value in changes.items():
        assert key_digest(engine_cache_key(**{**base, field: value})) != reference, field
    same_name_other_card = trt_env.GpuIdentity("NVIDIA H200", (9, 0))
    assert key_digest(engine_cache_key(**{**base, "gpu": same_name_other_card})) != reference
    for flag in ("tf32", "version_compatible", "hardware_compatible"):
        flagged = BuildSettings(profile=settings.profile, flags=BuilderFlags(**{flag: True}))
        assert key_digest(engine_cache_key(**{**base, "settings": flagged})) != reference, flag
    name = engine_file_name("denoiser", "fp16", gpu, "10.13.0.35", reference)
    assert name == f"denoiser.fp16.sm90.trt10.13.{reference[:8]}.plan"


def test_status_without_tensorrt(monkeypatch, toy_bundle):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    assert tensorrt_status() == (False, "TensorRT is not installed (pip install rsd-deploy[trt])")
    with pytest.raises(BackendUnavailableError) as info:
        build_engines(toy_bundle, ["fp16"])
    assert f"rsd-export --build-engine {toy_bundle}" in str(info.value)
    assert info.value.exit_code == 7


def test_status_sees_through_stub_only_and_old_installs(monkeypatch):
    stub = types.ModuleType("tensorrt")  # what `tensorrt-stubs` alone leaves importable
    monkeypatch.setitem(sys.modules, "tensorrt", stub)
    available, reason = tensorrt_status()
    assert not available and "type stubs" in reason
    install_fake(monkeypatch, version="10.8.0.43")
    available, reason = tensorrt_status()
    assert not available and "too old" in reason and ">= 10.12" in reason


def test_status_without_a_gpu(monkeypatch):
    fake = install_fake(monkeypatch)
    fake.cuda.gpus = []  # torch.cuda.is_available() is False
    available, reason = tensorrt_status()
    assert not available and reason.startswith("no CUDA GPU")
