"""The C++ runner (export/cpp): build it, check its host operations against PyTorch / the Python
pipeline, and run it end to end against the Python pipeline on real images.

Skips (with the reason) when cmake, a compiler, nlohmann-json, stb or the ONNX Runtime C++
headers are missing; .ci/run installs them (see export/README.md).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

try:  # tests/export as a package or as a rootdir-relative folder
    from . import embedkit_helpers as kit
except ImportError:  # pragma: no cover - depends on pytest's import mode
    import embedkit_helpers as kit

from rsd_deploy.pipeline.image_io import pad_to_multiple, read_image, to_model_range
from rsd_deploy.pipeline.tiling import TilePlan, feather_weights_1d
from rsd_deploy.pixels import quantize

REALSET = kit.REPO / ".." / "shared" / "data" / "realset65"


@pytest.fixture(scope="module")
def cpp(tmp_path_factory) -> dict:
    reason = kit.cpp_toolchain_missing() or kit.ort_headers_missing()
    if reason:
        pytest.skip(f"C++ runner not buildable here: {reason}")
    # inside the repo's ignored build/ so repeated runs rebuild incrementally
    return kit.build_cpp(kit.REPO / "build" / "cpp-tests")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


def ops(cpp: dict, *args) -> subprocess.CompletedProcess:
    proc = run([cpp["rsd_ops"], *args])
    assert proc.returncode == 0, proc.stderr
    return proc


def real_png(name: str = "00003.png") -> Path:
    path = REALSET / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


# ------------------------------------------------------------------------------- host operations
@pytest.mark.parametrize("shape", [(1, 3, 13, 17), (2, 3, 1, 5), (1, 1, 32, 32)])
def test_bicubic_matches_torch(cpp, tmp_path, shape):
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1.2, 1.2, size=shape).astype(np.float32))
    kit.save_npy(tmp_path / "in.npy", x.numpy())
    ops(cpp, "bicubic", tmp_path / "in.npy", 4, tmp_path / "out.npy")
    ours = np.load(tmp_path / "out.npy")
    ref = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False, antialias=False).numpy()
    assert ours.shape == ref.shape
    # float32 with another summation order: a few ulp; overshoot beyond [-1.2, 1.2] must be kept (no clamp)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    assert ours.max() > x.max().item()


def test_bicubic_matches_torch_on_a_real_image(cpp, tmp_path):
    lr = to_model_range(read_image(real_png()).rgb[:48, :40]).transpose(2, 0, 1)[None]
    kit.save_npy(tmp_path / "in.npy", lr)
    ops(cpp, "bicubic", tmp_path / "in.npy", 4, tmp_path / "out.npy")
    ref = F.interpolate(torch.from_numpy(lr), scale_factor=4, mode="bicubic", align_corners=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape,multiple", [((1, 3, 20, 9), 16), ((1, 3, 5, 7), 16), ((1, 3, 33, 64), 64),
                                            ((1, 3, 16, 16), 16)])
def test_pad_matches_pipeline(cpp, tmp_path, shape, multiple):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    kit.save_npy(tmp_path / "in.npy", x)
    ops(cpp, "pad", tmp_path / "in.npy", multiple, tmp_path / "out.npy")
    ref = pad_to_multiple(torch.from_numpy(x), multiple).numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), ref)


@pytest.mark.parametrize("h,w,tile,overlap", [(100, 76, 32, 8), (64, 64, 64, 16), (30, 200, 64, 16),
                                              (129, 65, 64, 63), (50, 50, 0, 0)])
def test_tile_plan_and_feather_weights_match_pipeline(cpp, tmp_path, h, w, tile, overlap):
    lines = ops(cpp, "tiles", h, w, tile, overlap).stdout.split("\n")
    ref = TilePlan.build(h, w, tile or None, overlap)
    assert [int(v) for v in lines[0].split()] == [ref.tile_h, ref.tile_w]
    assert [int(v) for v in lines[1].split()] == list(ref.ys)
    assert [int(v) for v in lines[2].split()] == list(ref.xs)
    for starts, size in ((ref.ys, ref.tile_h), (ref.xs, ref.tile_w)):
        ops(cpp, "feather", size, 4, tmp_path / "w.npy", *starts)
        np.testing.assert_allclose(np.load(tmp_path / "w.npy"), np.stack(feather_weights_1d(starts, size, 4)),
                                   rtol=0, atol=1e-7)


def test_read_image_matches_pipeline(cpp, tmp_path):
    path = real_png()
    ops(cpp, "read-image", path, tmp_path / "img.npy")
    ref = to_model_range(read_image(path).rgb).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(np.load(tmp_path / "img.npy"), ref, rtol=0, atol=1e-7)


def test_runner_noise_depends_only_on_the_position(cpp, tmp_path):
    """The runner's own noise (no --prior-noise): a region's noise is the crop of any larger region
    that contains it, so tiles agree in their overlaps whatever the tiling."""
    ops(cpp, "noise", 9, 0, 0, 150, 130, 1, tmp_path / "p.npy", tmp_path / "s.npy")
    big_p, big_s = np.load(tmp_path / "p.npy"), np.load(tmp_path / "s.npy")
    assert big_p.shape == (1, 3, 150, 130) and big_s.shape == (1, 1, 150, 130)
    assert abs(big_p.mean()) < 0.02 and abs(big_p.std() - 1) < 0.02
    for y, x, h, w in ((0, 0, 16, 16), (50, 70, 64, 48), (100, 63, 50, 67)):
        ops(cpp, "noise", 9, y, x, h, w, 1, tmp_path / "p2.npy", tmp_path / "s2.npy")
        np.testing.assert_array_equal(np.load(tmp_path / "p2.npy"), big_p[:, :, y:y + h, x:x + w])
        np.testing.assert_array_equal(np.load(tmp_path / "s2.npy"), big_s[:, :, y:y + h, x:x + w])
    ops(cpp, "noise", 10, 0, 0, 150, 130, 1, tmp_path / "p3.npy", tmp_path / "s3.npy")
    assert np.abs(np.load(tmp_path / "p3.npy") - big_p).mean() > 0.5  # another seed, other noise


# ------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def synthetic_bundle(tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("bundle")
    kit.write_synthetic_bundle(bundle, multiple=16, noise_channels=1, tile=32, overlap=8)
    return bundle


def upscale_both(cpp, bundle: Path, image: Path, tmp_path: Path, *, tile, overlap, seed=7):
    """C++ and Python pipeline on the same image and noise; returns (cpp float, python float, cpp png)."""
    import json

    manifest = json.loads((bundle / "manifest.json").read_text())
    multiple, nc = manifest["preprocess"]["latent_multiple"], manifest["model"]["noise_channels"]
    rgb = read_image(image).rgb
    h, w = rgb.shape[:2]
    prior, student = kit.global_noise(seed, kit.noise_extent(h, w, tile, overlap, multiple), nc)
    cmd = [cpp["rsd_upscale"], "--bundle", bundle, "--input", image, "--output", tmp_path / "sr.png",
           "--save-npy", tmp_path / "sr.npy", "--threads", 1, "--tile", tile or 0, "--overlap", overlap,
           "--prior-noise", kit.save_npy(tmp_path / "prior.npy", prior)]
    if student is not None:
        cmd += ["--student-noise", kit.save_npy(tmp_path / "student.npy", student)]
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr
    ours = np.load(tmp_path / "sr.npy")[0].transpose(1, 2, 0)
    ref = kit.python_pipeline(bundle, tile=tile, overlap=overlap, seed=seed).upscale_array(rgb)
    return ours, ref, read_image(tmp_path / "sr.png").rgb


@pytest.mark.parametrize("tile,overlap", [(None, 0), (32, 8)])
def test_runner_matches_python_pipeline_on_a_real_image(cpp, synthetic_bundle, tmp_path, tile, overlap):
    # a 60x44 crop: not a multiple of 16 (padding), several tiles at 32/8 (blending)
    crop = read_image(real_png()).rgb[100:160, 200:244]
    image = tmp_path / "lr.png"
    import cv2

    assert cv2.imwrite(str(image), crop[:, :, ::-1])
    ours, ref, png = upscale_both(cpp, synthetic_bundle, image, tmp_path, tile=tile, overlap=overlap)
    assert ours.shape == ref.shape == (240, 176, 3)
    # same graphs, same noise; only float summation order (bicubic, ORT threads) differs
    assert np.abs(ours - ref).max() < 1e-4
    ref_u8 = np.rint((ref * 0.5 + 0.5) * 255).astype(np.int16)
    assert np.abs(png.astype(np.int16) - ref_u8).max() <= 1
    # the PNG is the runner's own float image under Python's quantisation rule (clamp, scale, ties to even)
    np.testing.assert_array_equal(png, quantize(ours))
    assert ours.std() > 0.05  # a real picture went through, not a constant


def test_runner_binds_the_graphs_by_role_not_by_name(cpp, synthetic_bundle, tmp_path):
    """Every graph tensor renamed in the graphs and the manifest: the runner reads the names from the
    manifest's specs by role and gives the same image."""
    renamed = tmp_path / "renamed"
    kit.write_synthetic_bundle(renamed, multiple=16, noise_channels=1, tile=32, overlap=8, io_prefix="t_")
    crop = read_image(real_png()).rgb[100:132, 200:232]
    image = tmp_path / "lr.png"
    import cv2

    assert cv2.imwrite(str(image), crop[:, :, ::-1])
    outs = []
    for bundle in (synthetic_bundle, renamed):
        out = tmp_path / f"{bundle.name}.npy"
        proc = run([cpp["rsd_upscale"], "--bundle", bundle, "--input", image, "--output", tmp_path / "sr.png",
                    "--save-npy", out, "--threads", 1, "--seed", 5])
        assert proc.returncode == 0, proc.stderr
        outs.append(np.load(out))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.fixture(scope="module")
def tiny_bundle() -> Path:
    torch.set_num_threads(1)
    return kit.tiny_export_dir()


@pytest.mark.parametrize("tile,overlap", [(None, 0), (32, 8)])
def test_runner_matches_python_pipeline_with_the_real_tiny_model(cpp, tiny_bundle, tmp_path, tile, overlap):
    """Real RSD student + VQ-f4 graphs (tiny fixtures exported by the exporter's wrappers)."""
    crop = read_image(real_png()).rgb[96:156, 240:284]  # 60x44, padded to 64x48
    image = tmp_path / "lr.png"
    import cv2

    assert cv2.imwrite(str(image), crop[:, :, ::-1])
    ours, ref, png = upscale_both(cpp, tiny_bundle, image, tmp_path, tile=tile, overlap=overlap, seed=5)
    assert ours.shape == ref.shape == (240, 176, 3)
    # measured ~1e-5 (summation order); a flipped VQ code (argmin near-tie) would show as ~0.1+
    assert np.abs(ours - ref).max() < 1e-4
    ref_u8 = np.rint((ref * 0.5 + 0.5) * 255).astype(np.int16)
    assert np.abs(png.astype(np.int16) - ref_u8).max() <= 1
    assert ours.std() > 0.05


@pytest.mark.slow
def test_runner_matches_python_pipeline_on_a_whole_real_image(cpp, tiny_bundle, tmp_path):
    """realset65/00003.png (512x256) with the manifest-style 64/16 tiling: 45 tiles (~2 min)."""
    ours, ref, png = upscale_both(cpp, tiny_bundle, real_png(), tmp_path, tile=64, overlap=16, seed=5)
    assert ours.shape == (1024, 2048, 3)
    assert np.abs(ours - ref).max() < 1e-4  # measured 1.1e-5
    ref_u8 = np.rint((ref * 0.5 + 0.5) * 255).astype(np.int16)
    assert np.abs(png.astype(np.int16) - ref_u8).max() <= 1


def test_runner_handles_models_without_a_noise_input(cpp, tmp_path):
    """SinSR-style denoiser (noise_channels 0): no student noise map anywhere."""
    bundle = tmp_path / "sinsr"
    kit.write_synthetic_bundle(bundle, multiple=16, noise_channels=0, kind="sinsr")
    image = tmp_path / "lr.png"
    import cv2

    assert cv2.imwrite(str(image), read_image(real_png()).rgb[:36, :50, ::-1])
    ours, ref, _ = upscale_both(cpp, bundle, image, tmp_path, tile=32, overlap=8)
    assert ours.shape == (144, 200, 3) and np.abs(ours - ref).max() < 1e-4
    proc = run([cpp["rsd_upscale"], "--bundle", bundle, "--input", image, "--output", tmp_path / "x.png",
                "--student-noise", tmp_path / "prior.npy"])
    assert proc.returncode == 2 and "has no noise input" in proc.stderr and not (tmp_path / "x.png").exists()


def test_runner_seed_noise_is_reproducible(cpp, synthetic_bundle, tmp_path):
    image = real_png("00003.png")
    crop = tmp_path / "lr.png"
    import cv2

    assert cv2.imwrite(str(crop), read_image(image).rgb[:40, :40, ::-1])
    outs = []
    for i, seed in enumerate((3, 3, 4)):
        proc = run([cpp["rsd_upscale"], "--bundle", synthetic_bundle, "--input", crop, "--output",
                    tmp_path / f"o{i}.png", "--save-npy", tmp_path / f"o{i}.npy", "--seed", seed, "--threads", 1])
        assert proc.returncode == 0, proc.stderr
        outs.append(np.load(tmp_path / f"o{i}.npy"))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - outs[2]).max() > 1e-3


def test_pipeline_noise_script_reproduces_rsd_upscale_noise(cpp, tiny_bundle, tmp_path):
    """export/cpp/scripts/pipeline_noise.py + rsd_upscale == the Python pipeline (tile rounded up as it does)."""
    import cv2

    image = tmp_path / "lr.png"
    assert cv2.imwrite(str(image), read_image(real_png()).rgb[10:50, 300:370, ::-1])  # 40x70
    script = kit.CPP_DIR / "scripts" / "pipeline_noise.py"
    proc = run([sys.executable, script, "--bundle", tiny_bundle, "--input", image, "--tile", 30, "--overlap", 8,
                "--seed", 3, "--out-dir", tmp_path / "noise"])
    assert proc.returncode == 0, proc.stderr
    flags = proc.stdout.split()
    assert flags[:2] == ["--tile", "30"] and "--student-noise" in flags
    proc = run([cpp["rsd_upscale"], "--bundle", tiny_bundle, "--input", image, "--output", tmp_path / "sr.png",
                "--save-npy", tmp_path / "sr.npy", "--threads", 1, *flags])
    assert proc.returncode == 0, proc.stderr
    ours = np.load(tmp_path / "sr.npy")[0].transpose(1, 2, 0)
    ref = kit.python_pipeline(tiny_bundle, tile=30, overlap=8, seed=3).upscale_array(read_image(image).rgb)
    assert np.abs(ours - ref).max() < 1e-4


def test_runner_batches_tiles_without_changing_the_result(cpp, tiny_bundle, tmp_path):
    import cv2

    image = tmp_path / "lr.png"
    assert cv2.imwrite(str(image), read_image(real_png()).rgb[96:156, 240:284, ::-1])  # 6 tiles at 32/8
    outs = []
    for batch in (1, 4):
        proc = run([cpp["rsd_upscale"], "--bundle", tiny_bundle, "--input", image, "--output", tmp_path / f"{batch}.png",
                    "--save-npy", tmp_path / f"{batch}.npy", "--tile", 32, "--overlap", 8, "--batch", batch,
                    "--seed", 2, "--threads", 1])
        assert proc.returncode == 0, proc.stderr
        outs.append(np.load(tmp_path / f"{batch}.npy"))
    assert np.abs(outs[0] - outs[1]).max() < 1e-4  # batched kernels may sum in another order


# ------------------------------------------------------------------------------- bad input
def test_runner_errors_are_one_line_with_exit_codes(cpp, synthetic_bundle, tmp_path):
    image = real_png()
    out = tmp_path / "out.png"
    cases = [
        (["--bundle", tmp_path / "nowhere", "--input", image, "--output", out], 9, "manifest"),
        (["--bundle", synthetic_bundle, "--input", tmp_path / "missing.png", "--output", out], 5, "missing.png"),
        (["--bundle", synthetic_bundle, "--input", image, "--output", image], 2, "--output"),
        (["--bundle", synthetic_bundle, "--input", image, "--output", out, "--precision", "int8"], 9, "int8"),
        (["--bundle", synthetic_bundle, "--input", image, "--output", out, "--backend", "tensorrt"], 7, "TensorRT"),
        (["--bundle", synthetic_bundle, "--input", image, "--output", out, "--tile", "x"], 2, "--tile"),
        (["--bundle", synthetic_bundle, "--input", image], 2, "--output"),
        (["--bundle", synthetic_bundle, "--input", image, "--output", out, "--batch", "0"], 2, "--batch"),
    ]
    before = image.read_bytes()
    for args, code, needle in cases:
        proc = run([cpp["rsd_upscale"], *args])
        assert proc.returncode == code, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert not out.exists()
    assert image.read_bytes() == before


def test_runner_rejects_a_too_small_noise_map(cpp, synthetic_bundle, tmp_path):
    image = tmp_path / "lr.png"
    import cv2

    assert cv2.imwrite(str(image), read_image(real_png()).rgb[:20, :20, ::-1])
    kit.save_npy(tmp_path / "prior.npy", np.zeros((1, 3, 8, 8), np.float32))
    proc = run([cpp["rsd_upscale"], "--bundle", synthetic_bundle, "--input", image, "--output", tmp_path / "o.png",
                "--prior-noise", tmp_path / "prior.npy"])
    assert proc.returncode == 4 and "noise map" in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_runner_refuses_preprocessing_it_does_not_implement(cpp, synthetic_bundle, tmp_path):
    import json
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(synthetic_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocess"]["upsample"]["antialias"] = True
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = run([cpp["rsd_upscale"], "--bundle", bundle, "--input", real_png(), "--output", tmp_path / "o.png"])
    assert proc.returncode == 9 and "antialias=false" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_runner_rejects_a_corrupt_manifest(cpp, tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    proc = run([cpp["rsd_upscale"], "--bundle", tmp_path, "--input", real_png(), "--output", tmp_path / "o.png"])
    assert proc.returncode == 9 and "not valid JSON" in proc.stderr
