"""``rsd-upscale`` end to end on the tiny fixtures: formats, bad inputs, safe outputs, option errors."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest
import torch

from rsd_deploy.cli.common import run_command
from rsd_deploy.cli.upscale import cli
from rsd_deploy.pipeline.image_io import upscale_alpha
from tests.conftest import DATA, FIXTURES
from tests.pipeline.helpers import random_rgb

RSD = FIXTURES / "rsd_student_tiny" / "state_dict.pth"
UNET = FIXTURES / "unet_tiny" / "state_dict.pth"
VQ = FIXTURES / "vq_tiny" / "state_dict.pth"


@pytest.fixture(autouse=True)
def _need_fixtures():
    for p in (RSD, UNET, VQ):
        if not p.is_file():
            pytest.skip(f"fixture {p} is absent")


def run(capsys, *args) -> tuple:
    code = run_command(cli, ["-q", *map(str, args)] if "-v" not in args else list(map(str, args)))
    captured = capsys.readouterr()
    return code, captured.err


def tiny(*args):
    return ("--checkpoint", RSD, "--vq", VQ, *args)


def snapshot(folder: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def error_lines(err: str):
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_formats_depths_grey_and_alpha(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rgb = random_rgb(20, 24, seed=1)
    cv2.imwrite(str(src / "a.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(src / "j.jpg"), rgb[:, :, ::-1])
    cv2.imwrite(str(src / "g16.png"), (random_rgb(12, 10, seed=2, dtype=np.uint16)[:, :, 0]))
    alpha = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (20, 1))
    cv2.imwrite(str(src / "rgba.png"), np.dstack([rgb[:, :, ::-1], alpha]))
    (src / "notes.txt").write_text("not an image: skipped when a folder is given")
    before = snapshot(src)

    code, err = run(capsys, src, "-o", tmp_path / "out", *tiny())
    assert code == 0, err
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "g16_x4.png", "j_x4.png", "rgba_x4.png"]
    a = cv2.imread(str(out / "a_x4.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (80, 96, 3) and a.dtype == np.uint8
    g = cv2.imread(str(out / "g16_x4.png"), cv2.IMREAD_UNCHANGED)
    assert g.shape == (48, 40) and g.dtype == np.uint16  # grey in -> grey out, 16 bit in -> 16 bit out
    assert g.max() > 255  # really uses the 16-bit range
    rgba = cv2.imread(str(out / "rgba_x4.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (80, 96, 4)
    np.testing.assert_array_equal(rgba[:, :, 3], upscale_alpha(alpha, 4))
    np.testing.assert_array_equal(rgba[:, :, :3], a)  # the colour channels do not see the alpha
    assert snapshot(src) == before


def test_seed_makes_runs_repeatable(tmp_path, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), random_rgb(16, 16, seed=3))
    outs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        code, err = run(capsys, img, "-o", tmp_path / name, "--seed", seed, *tiny())
        assert code == 0, err
        outs[name] = cv2.imread(str(tmp_path / name / "x_x4.png"))
    np.testing.assert_array_equal(outs["a"], outs["b"])
    assert np.abs(outs["a"].astype(int) - outs["c"]).mean() > 1  # RSD is stochastic: the seed matters


def test_bad_inputs_fail_one_by_one_and_the_rest_is_written(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "good.png"), random_rgb(16, 20))
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    good = cv2.imread(str(src / "good.png"))
    (src / "truncated.png").write_bytes(cv2.imencode(".png", good)[1].tobytes()[:60])
    before = snapshot(src)

    code, err = run(capsys, src, tmp_path / "missing.png", "-o", tmp_path / "out", *tiny())
    assert code == 5  # ImageIOError
    lines = error_lines(err)
    assert any("missing.png: no such file" in line for line in lines)
    assert any("empty.png: file is empty" in line for line in lines)
    assert any("corrupt.jpg: cannot decode" in line for line in lines)
    assert any("truncated.png: cannot decode" in line for line in lines)
    assert lines[-1].startswith("error: 4 of 5 inputs failed")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good_x4.png"]  # no temp files left
    assert snapshot(src) == before


def test_inputs_are_never_overwritten_even_in_the_same_folder(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), random_rgb(16, 16, seed=1))
    cv2.imwrite(str(tmp_path / "a_x4.png"), random_rgb(16, 16, seed=2))  # an input named like a's output
    cv2.imwrite(str(tmp_path / "b.jpg"), random_rgb(16, 16, seed=3))
    cv2.imwrite(str(tmp_path / "b.png"), random_rgb(16, 16, seed=4))  # same stem: same output name
    before = snapshot(tmp_path)

    code = run_command(cli, [str(tmp_path), "-o", str(tmp_path), *map(str, tiny())])  # no -q: warnings asserted
    err = capsys.readouterr().err
    assert code == 5
    lines = error_lines(err)
    # -o is the input folder: a_x4.png counts as an earlier output, neither upscaled again nor overwritten
    assert f"warning: skipped: {tmp_path / 'a.png'}: its output a_x4.png is already in the folder (an earlier " \
           f"run's?); remove it or choose another -o folder to redo it" in err.splitlines()
    assert any("b.png: output" in line and "is also the output of" in line for line in lines)
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before  # every input byte-identical
    assert sorted(set(after) - set(before)) == ["b_x4.png"]


def test_unwritable_output_folder_and_unwritable_output_file(tmp_path, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), random_rgb(16, 16))
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    code, err = run(capsys, img, "-o", blocker / "out", *tiny())
    assert code == 5 and error_lines(err) == [f"error: {blocker / 'out'}: cannot create the output folder "
                                              f"(Not a directory); choose a writable -o folder"]

    out = tmp_path / "out"
    (out / "x_x4.png").mkdir(parents=True)  # the output name is taken by a folder: the write fails
    img2 = tmp_path / "y.png"
    cv2.imwrite(str(img2), random_rgb(16, 16))
    code, err = run(capsys, img, img2, "-o", out, *tiny())
    assert code == 5
    assert any("x_x4.png: cannot write output" in line for line in error_lines(err))
    assert sorted(p.name for p in out.iterdir()) == ["x_x4.png", "y_x4.png"] and (out / "x_x4.png").is_dir()


@pytest.mark.parametrize("args,code,needle", [
    (("--checkpoint", RSD), 2, "--checkpoint needs --vq"),
    (("--vq", VQ), 2, "--vq needs --checkpoint"),
    (tiny("--precision", "fp16", "--device", "cpu"), 2, "fp16 needs a CUDA device"),
    (tiny("--model", "sinsr"), 2, "is an RSD student"),
    (("--checkpoint", UNET, "--vq", VQ), 2, "pass --model sinsr, resshift-v1 or resshift-v3"),
    (("--checkpoint", UNET, "--vq", VQ, "--model", "rsd"), 2, "not an RSD student"),
    (("--checkpoint", VQ, "--vq", RSD), 2, "swap them"),
    (tiny("--tile", "32", "--overlap", "32"), 2, "overlap 32 must be"),
    (("--onnx", "x", "--engine", "y"), 2, "exclude each other"),
])
def test_option_errors_are_one_line_with_an_exit_code(tmp_path, capsys, args, code, needle):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), random_rgb(16, 16))
    got, err = run(capsys, img, "-o", tmp_path / "out", *args)
    lines = err.strip().splitlines()
    assert got == code and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "out" / "x_x4.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_gpu_is_a_backend_error(tmp_path, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), random_rgb(16, 16))
    code, err = run(capsys, img, "-o", tmp_path / "out", *tiny("--device", "cuda"))
    assert code == 7 and "CUDA is not available" in err


def test_missing_checkpoint_file_is_a_checkpoint_error(tmp_path, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), random_rgb(16, 16))
    code, err = run(capsys, img, "-o", tmp_path / "out", "--checkpoint", tmp_path / "nope.pth", "--vq", VQ)
    assert code == 3 and len(error_lines(err)) == 1 and "nope.pth" in err


def test_without_checkpoint_the_embedded_default_is_used_and_announced(tmp_path, capsys, monkeypatch):
    from rsd_deploy import default_model, load_checkpoint

    monkeypatch.setattr(default_model, "load_default_models",
                        lambda: (load_checkpoint(RSD), load_checkpoint(VQ), {"kind": "rsd", "label": "test demo"}))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), random_rgb(8, 12))
    code = run_command(cli, [str(img), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "using the embedded demo model (test demo, rsd)" in err
    assert cv2.imread(str(tmp_path / "out" / "x_x4.png")).shape == (32, 48, 3)


def test_a_real_image_from_the_shared_set(tmp_path, capsys):
    path = DATA / "realset65" / "penguin1.png"  # RGBA, odd size 215 x 167
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    crop = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[100:133, 60:77]  # 33 x 17, keeps alpha
    cv2.imwrite(str(tmp_path / "p.png"), crop)
    code, err = run(capsys, tmp_path / "p.png", "-o", tmp_path / "out", *tiny("--tile", "16", "--overlap", "4"))
    assert code == 0, err
    out = cv2.imread(str(tmp_path / "out" / "p_x4.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (132, 68, 4)


@pytest.mark.slow
def test_onnx_backend_gives_the_torch_result(tmp_path, capsys):
    """--onnx runs the same pipeline (same noise, tiling, blending) through ONNX Runtime."""
    pytest.importorskip("onnxruntime")
    from rsd_deploy.cli.export import cli as export_cli

    code = run_command(export_cli, ["-o", str(tmp_path / "onnx"), "--checkpoint", str(RSD), "--vq", str(VQ),
                                    "--opt-shape", "1x32x32", "--max-shape", "4x64x64"])
    assert code == 0, capsys.readouterr().err
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), random_rgb(50, 70, seed=9))
    common = ("--tile", "32", "--overlap", "8", "--seed", "3", "--precision", "fp32")  # fp32: the reference
    assert run(capsys, img, "-o", tmp_path / "ort", "--onnx", tmp_path / "onnx", *common)[0] == 0
    assert run(capsys, img, "-o", tmp_path / "torch", *tiny(*common))[0] == 0
    a = cv2.imread(str(tmp_path / "ort" / "x_x4.png")).astype(int)
    b = cv2.imread(str(tmp_path / "torch" / "x_x4.png")).astype(int)
    assert a.shape == (200, 280, 3) and np.abs(a - b).max() <= 2  # measured: max 1 LSB


def test_reuse_freed_memory_applies_on_glibc_only():
    import platform
    import sys

    from rsd_deploy.cli.common import reuse_freed_memory

    on_glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert reuse_freed_memory() is on_glibc
