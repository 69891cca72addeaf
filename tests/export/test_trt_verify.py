"""``rsd-export --verify`` harness (polygraphy Comparator) on real images, without a GPU.

The TensorRT engine runner is swapped for ONNX Runtime runners over other graphs, so the harness
itself (real crops, the chained inputs, PSNR / mean-error arithmetic, thresholds, the report) runs
for real here; with a GPU the default runner is polygraphy's TrtRunner over the engines.
"""
from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch

from rsd_deploy.errors import AtolError, BackendUnavailableError, ConfigError
from rsd_deploy.export.trt_verify import VerifyOptions, verify_engines
from tests.conftest import DATA
from tests.export.trt_fixtures import _toy_bundle_template, fake_trt, no_cuda_violations, toy_bundle  # noqa: F401

REALSET = DATA / "realset65"


@pytest.fixture
def images():
    if not REALSET.is_dir():
        pytest.skip(f"{REALSET} is absent")
    return (REALSET,)


def _onnx_factory(folder, files):
    """Candidate runners over ONNX graphs (stand-ins for engines): files[(submodel, precision)]."""
    from rsd_deploy.export.trt_verify import _reference_runner

    def factory(submodel, precision):
        path = folder / files.get((submodel, precision), f"{submodel}.{precision}.onnx")
        # an unoptimised session, as the reference: identical graphs give 0 error
        return _reference_runner(path, f"cand-{submodel}-{precision}")

    return factory


def test_identical_graphs_verify_perfectly(toy_bundle, images):
    files = {(s, "fp32"): f"{s}.onnx" for s in ("encoder", "denoiser", "decoder")}
    report = verify_engines(toy_bundle, VerifyOptions(precisions=("fp32",), image_dirs=images, count=2),
                            candidate_runner=_onnx_factory(toy_bundle, files))
    assert report.passed and report.latent_shape[1:] == (64, 64)  # the spec's opt tile
    assert all(g.max_abs == 0.0 and math.isinf(g.psnr_db) for g in report.graphs)
    (e2e,) = report.end_to_end
    assert math.isinf(e2e.psnr_db)
    written = json.loads((toy_bundle / "trt_verify.json").read_text())
    assert written["passed"] is True and written["end_to_end"]["fp32"]["psnr_db"] is None


def test_fp16_graphs_report_real_error_and_pass(toy_bundle, images):
    report = verify_engines(toy_bundle, VerifyOptions(precisions=("fp16",), image_dirs=images, count=2,
                                                      latent_size=32),
                            candidate_runner=_onnx_factory(toy_bundle, {}))
    assert report.passed
    by_graph = {g.graph: g for g in report.graphs}
    assert set(by_graph) == {"encoder", "denoiser", "decoder"}
    for g in report.graphs:  # fp16 rounding shows, but well inside the fp16 bound
        assert 0.0 < g.mean_abs < 1e-2 and g.max_abs < 0.05
    assert report.end_to_end[0].psnr_db >= 40.0


def test_wrong_engine_fails_with_one_line(toy_bundle, images, tmp_path):
    # a decoder with other weights: what a stale or mis-built engine would produce
    from tests.export.trt_toy_bundle import ToyDecoder, _export, toy_specs

    torch.manual_seed(123)
    _export(ToyDecoder().eval(), toy_specs()["decoder"], toy_bundle / "decoder.wrong.onnx")
    files = {(s, "fp32"): f"{s}.onnx" for s in ("encoder", "denoiser")}
    files[("decoder", "fp32")] = "decoder.wrong.onnx"
    with pytest.raises(AtolError) as info:
        verify_engines(toy_bundle, VerifyOptions(precisions=("fp32",), image_dirs=images, count=1, latent_size=16),
                       candidate_runner=_onnx_factory(toy_bundle, files))
    message = str(info.value)
    assert "decoder.fp32 mean |err|" in message and "fp32 end-to-end" in message and "\n" not in message
    report = json.loads((toy_bundle / "trt_verify.json").read_text())
    assert report["passed"] is False  # written before raising
    assert [g["passed"] for g in report["graphs"].values()] == [True, True, False]


class _SessionFromOnnx049:
    """polygraphy 0.49.x's loader signature (NVIDIA/TensorRT tools/Polygraphy, 0.49.27 in the 11.1
    release): no graph_optimization_level argument."""

    def __init__(self, model_bytes, providers=None):
        raise AssertionError("--verify must not need SessionFromOnnx")


def test_verify_works_with_polygraphy_049_loaders(monkeypatch, toy_bundle, images):
    import polygraphy.backend.onnxrt as onnxrt

    monkeypatch.setattr(onnxrt, "SessionFromOnnx", _SessionFromOnnx049)
    files = {(s, "fp32"): f"{s}.onnx" for s in ("encoder", "denoiser", "decoder")}
    report = verify_engines(toy_bundle, VerifyOptions(precisions=("fp32",), image_dirs=images, count=1,
                                                      latent_size=16),
                            candidate_runner=_onnx_factory(toy_bundle, files))
    assert report.passed and all(g.max_abs == 0.0 for g in report.graphs)


def test_without_tensorrt_verify_says_why(monkeypatch, toy_bundle, images):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="cannot verify TensorRT engines: TensorRT is not installed"):
        verify_engines(toy_bundle, VerifyOptions(image_dirs=images))


def test_default_precisions_are_those_with_engines(fake_trt, toy_bundle, images):
    options = VerifyOptions(image_dirs=images, count=1, latent_size=16)
    with pytest.raises(ConfigError, match="no TensorRT engines to verify; build them with `rsd-export --build-engine"):
        verify_engines(toy_bundle, options, candidate_runner=_onnx_factory(toy_bundle, {}))
    from rsd_deploy.export.engine_build import build_engines

    build_engines(toy_bundle, ["fp16"])  # through FakeTensorRT (recording test double)
    report = verify_engines(toy_bundle, options, candidate_runner=_onnx_factory(toy_bundle, {}))
    assert [e.precision for e in report.end_to_end] == ["fp16"]
    assert str(report).startswith("TensorRT vs ONNX Runtime fp32:\n") and "fp16: SR PSNR" in str(report)
