"""The C++ runner's TensorRT path on a GPU machine (skipped elsewhere).

Needs: a CUDA GPU, the `tensorrt` Python package (engine build), the TensorRT C++ SDK headers
(NvInfer.h; set TENSORRT_ROOT to a tar install, or install the deb/JetPack dev packages) and the
CUDA toolkit (cudart). Run: `python -m pytest tests/gpu/test_cpp_tensorrt.py -q`.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.export import embedkit_helpers as kit

pytestmark = [pytest.mark.gpu, pytest.mark.trt]

REALSET = kit.REPO / ".." / "shared" / "data" / "realset65"


def _tensorrt_headers() -> Path | None:
    roots = [Path(os.environ["TENSORRT_ROOT"]) / "include"] if os.environ.get("TENSORRT_ROOT") else []
    roots += [Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include/aarch64-linux-gnu"),
              Path("/usr/local/tensorrt/include")]
    return next((r for r in roots if (r / "NvInfer.h").is_file()), None)


@pytest.fixture(scope="module")
def trt_cpp():
    reason = kit.cpp_toolchain_missing()
    if reason:
        pytest.skip(reason)
    if _tensorrt_headers() is None:
        pytest.skip("TensorRT C++ headers (NvInfer.h) not found; install the TensorRT SDK and set TENSORRT_ROOT")
    options = ["-DRSD_WITH_TENSORRT=ON", "-DRSD_WITH_ONNXRUNTIME=" + ("OFF" if kit.ort_headers_missing() else "ON")]
    if os.environ.get("TENSORRT_ROOT"):
        options.append(f"-DTENSORRT_ROOT={os.environ['TENSORRT_ROOT']}")
    return kit.build_cpp(kit.REPO / "build" / "cpp-tests-trt", options=options)


@pytest.fixture(scope="module")
def engine_bundle(tmp_path_factory) -> Path:
    from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines
    from rsd_deploy.bundle.specs import ShapeProfile

    bundle = tmp_path_factory.mktemp("trt") / "bundle"
    kit.export_tiny_bundle(bundle, (kit.REPO / ".." / "shared" / "fixtures").resolve())
    build_engines(bundle, ["fp32"], EngineBuildOptions(profile=ShapeProfile((1, 16, 16), (1, 32, 32), (4, 64, 64))))
    return bundle


def _run(cpp, bundle, image, out, backend, extra=()):
    proc = subprocess.run([str(c) for c in [cpp["rsd_upscale"], "--bundle", bundle, "--input", image, "--output",
                                            out.with_suffix(".png"), "--save-npy", out, "--backend", backend,
                                            "--tile", 32, "--overlap", 8, "--seed", 1, *extra]],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


def test_tensorrt_path_matches_the_python_pipeline(trt_cpp, engine_bundle, tmp_path):
    import cv2

    from rsd_deploy.pipeline.image_io import read_image

    path = REALSET / "00003.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    rgb = read_image(path).rgb[:96, :120]
    image = tmp_path / "lr.png"
    assert cv2.imwrite(str(image), rgb[:, :, ::-1])
    manifest = json.loads((engine_bundle / "manifest.json").read_text())
    prior, student = kit.global_noise(1, kit.noise_extent(96, 120, 32, 8, 16), manifest["model"]["noise_channels"])
    noise = ["--prior-noise", kit.save_npy(tmp_path / "p.npy", prior),
             "--student-noise", kit.save_npy(tmp_path / "s.npy", student)]
    trt = _run(trt_cpp, engine_bundle, image, tmp_path / "trt.npy", "tensorrt", noise)
    graph = _run(trt_cpp, engine_bundle, image, tmp_path / "graph.npy", "tensorrt", noise + ["--cuda-graph"])
    np.testing.assert_array_equal(trt, graph)  # CUDA graph replays the same kernels
    ref = kit.python_pipeline(engine_bundle, tile=32, overlap=8, seed=1).upscale_array(rgb)
    ours = trt[0].transpose(1, 2, 0)
    psnr = 10 * np.log10(4.0 / max(float(((ours - ref) ** 2).mean()), 1e-12))
    # fp32 engine vs ONNX Runtime CPU: tactic-dependent rounding (and rare VQ near-tie flips)
    assert psnr > 40.0, psnr


def test_out_of_profile_tiles_fail_with_one_line(trt_cpp, engine_bundle, tmp_path):
    import cv2

    image = tmp_path / "lr.png"
    assert cv2.imwrite(str(image), np.zeros((100, 100, 3), np.uint8))
    proc = subprocess.run([str(trt_cpp["rsd_upscale"]), "--bundle", str(engine_bundle), "--input", str(image),
                           "--output", str(tmp_path / "o.png"), "--backend", "tensorrt", "--tile", "0"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4 and "outside the engine profile" in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_version_compatible_plans_load_in_the_cpp_runner(trt_cpp, engine_bundle, tmp_path):
    """setEngineHostCodeAllowed(true): a version-compatible plan (embedded lean runtime) loads."""
    import shutil

    import cv2

    from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines
    from rsd_deploy.bundle.specs import ShapeProfile

    bundle = tmp_path / "vc"
    shutil.copytree(engine_bundle, bundle)
    build_engines(bundle, ["fp32"], EngineBuildOptions(profile=ShapeProfile((1, 16, 16), (1, 32, 32), (4, 64, 64)),
                                                       version_compatible=True))
    image = tmp_path / "lr.png"
    assert cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    out = _run(trt_cpp, bundle, image, tmp_path / "vc.npy", "tensorrt")
    assert np.isfinite(out).all()
