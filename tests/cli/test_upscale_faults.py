"""Issue 14, rsd-upscale: every per-file fault fails that file alone in one line, the batch goes on,
nothing silent (skipped files are named), nothing lost (inputs and earlier outputs unchanged)."""
from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from rsd_deploy.cli.common import run_command
from rsd_deploy.cli.upscale import cli
from rsd_deploy.pipeline import batch
from rsd_deploy.pipeline.image_io import upscale_alpha
from tests.cli.conftest import RSD, VQ
from tests.pipeline.helpers import random_rgb


def upscale(capsys, *args, vq=VQ, quiet=True):
    code = run_command(cli, ["-q"] * quiet + [*map(str, args), "--checkpoint", str(RSD), "--vq", str(vq)])
    return code, capsys.readouterr().err


def warnings_and_errors(err: str):
    return [line for line in err.splitlines() if line.startswith(("warning:", "error:"))]


def snapshot(folder: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


def png_chunk(kind: bytes, body: bytes, good_crc: bool = True) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc if good_crc else crc ^ 1)


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims another size (what a decompression bomb's header looks like)."""
    png = cv2.imencode(".png", random_rgb(8, 8))[1].tobytes()
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png_chunk(b"IHDR", ihdr) + png[33:]


def test_any_per_file_failure_is_reported_and_later_files_are_written(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c", "d"):
        cv2.imwrite(str(src / f"{name}.png"), random_rgb(12, 12, seed=ord(name)))
    (src / "e.png").write_bytes(png_claiming(100000, 100000))  # cv2.error (OpenCV's pixel limit) before issue 14
    real_read = batch.read_image

    def flaky_read(path, **kw):
        if path.name == "a.png":
            raise cv2.error("OpenCV(5.0.0) loadsave.cpp:79: error: (-215:Assertion failed) pixels <= "
                            "CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'")
        if path.name == "c.png":
            raise ValueError("Required inputs (['latent']) are missing from input feed (['image']).")
        return real_read(path, **kw)

    monkeypatch.setattr(batch, "read_image", flaky_read)
    before = snapshot(src)
    code, err = upscale(capsys, src, "-o", tmp_path / "out")
    assert code == 70  # the first failure's code: an unanticipated exception (docs/CLI.md)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_x4.png", "d_x4.png"]
    lines = err.strip().splitlines()
    assert lines[0] == (f"error: {src / 'a.png'}: unexpected cv2.error (OpenCV(5.0.0) loadsave.cpp:79: error: (-215:"
                        f"Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'); "
                        f"run with -v for details")
    assert lines[1] == (f"error: {src / 'c.png'}: unexpected ValueError (Required inputs (['latent']) are missing "
                        f"from input feed (['image']).); run with -v for details")
    assert lines[2].startswith(f"error: {src / 'e.png'}: 100000x100000 px gives a 400000x400000 output")
    assert lines[3] == f"error: 3 of 5 inputs failed: {src / 'a.png'}, {src / 'c.png'}, {src / 'e.png'}"
    assert len(lines) == 4 and "Traceback" not in err and snapshot(src) == before


def test_verbose_shows_the_traceback_of_a_per_file_failure(tmp_path, capsys, monkeypatch):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), random_rgb(12, 12))
    monkeypatch.setattr(batch, "read_image", lambda path, **kw: 1 / 0)
    code = run_command(cli, [str(img), "-o", str(tmp_path / "out"), "-v", "--checkpoint", str(RSD), "--vq", str(VQ)])
    err = capsys.readouterr().err
    assert code == 70 and "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


def test_huge_image_is_refused_from_its_header_with_the_limit_named(tmp_path, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(png_claiming(24000, 24000))
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), random_rgb(10, 10))
    code, err = upscale(capsys, big, small, "-o", tmp_path / "out")
    assert code == 5
    assert err.splitlines()[0] == (
        f"error: {big}: 24000x24000 px gives a 96000x96000 output (9,216 megapixels, 27.6 GB as 3-channel 8-bit), "
        f"above the limit of 1,024 megapixels; crop or downscale the input, or raise --max-output-megapixels if "
        f"the machine has the memory")
    assert (tmp_path / "out" / "small_x4.png").is_file()  # the batch went on

    # the limit is an option: a 10 x 10 input gives 0.0016 MP
    code, err = upscale(capsys, small, "-o", tmp_path / "out2", "--max-output-megapixels", "0.001")
    assert code == 5 and "above the limit of 0.001 megapixels" in err and not (tmp_path / "out2" / "small_x4.png").exists()
    code, err = upscale(capsys, small, "-o", tmp_path / "out3", "--max-output-megapixels", "0.002")
    assert code == 0, err


def test_non_finite_outputs_fail_the_image_instead_of_a_black_png(tmp_path, capsys):
    """Finite weights that overflow in use (as fp16 overflows): the image fails with a line, exit 11."""
    state = torch.load(VQ, weights_only=True)
    state["decoder.conv_out.weight"] = torch.full_like(state["decoder.conv_out.weight"], 1e38)  # finite, sums overflow
    vq = tmp_path / "vq_overflow.pth"
    torch.save(state, vq)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), random_rgb(12, 12))
    code, err = upscale(capsys, img, "-o", tmp_path / "out", vq=vq)
    assert code == 11
    line = next(line for line in err.splitlines() if line.startswith(f"error: {img}"))
    assert "the network produced NaN/Inf" in line and "use --precision fp32 or bf16" in line
    assert not (tmp_path / "out" / "a_x4.png").exists()


def test_decoder_warnings_do_not_reach_stderr(tmp_path, capfd):
    png = cv2.imencode(".png", random_rgb(12, 12))[1].tobytes()
    bad = tmp_path / "crc.png"  # libpng prints "libpng warning: tEXt: CRC error" straight to fd 2
    bad.write_bytes(png[:33] + png_chunk(b"tEXt", b"Comment\x00hello", good_crc=False) + png[33:])
    truncated = tmp_path / "truncated.png"  # OpenCV logs "[ WARN:0@...] PNG input buffer is incomplete"
    truncated.write_bytes(png[: len(png) // 2])
    code = run_command(cli, ["-q", str(bad), str(truncated), "-o", str(tmp_path / "out"),
                             "--checkpoint", str(RSD), "--vq", str(VQ)])
    err = capfd.readouterr().err
    assert code == 5 and (tmp_path / "out" / "crc_x4.png").is_file()
    assert err.splitlines() == [
        f"error: {truncated}: cannot decode image (corrupt, truncated or unsupported format); use a valid PNG, "
        f"JPEG, WebP, TIFF or BMP file",
        f"error: 1 of 2 inputs failed: {truncated}"], err


@pytest.mark.parametrize("seed", ["-1", str(2 ** 64)])
def test_seeds_out_of_range_are_refused(tmp_path, capsys, seed):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), random_rgb(8, 8))
    code, err = upscale(capsys, img, "-o", tmp_path / "out", "--seed", seed)
    assert code == 2 and err.count("\n") == 1 and f"'--seed': {seed} is not in the range 0<=x<=" in err
    assert not (tmp_path / "out").exists()


def test_empty_output_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), random_rgb(8, 8))
    code, err = upscale(capsys, img, "-o", "")
    assert code == 2 and err.count("\n") == 1
    assert "an empty path would write into the current folder; pass a folder name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_gif_and_dangling_symlink_in_a_folder_are_named(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), random_rgb(8, 8))
    Image.fromarray(random_rgb(8, 8)).save(src / "anim.gif")
    (src / "gone.png").symlink_to(tmp_path / "deleted.png")
    (src / "notes.txt").write_text("not an image, not worth a line")
    code, err = upscale(capsys, src, "-o", tmp_path / "out", quiet=False)
    assert code == 0, err
    assert warnings_and_errors(err) == [
        f"warning: skipped: {src / 'anim.gif'}: GIF is not supported; convert it to PNG "
        f"(.png, .jpg, .jpeg, .webp, .tif, .tiff, .bmp are read)",
        f"warning: skipped: {src / 'gone.png'}: a dangling symlink (target {tmp_path / 'deleted.png'} is missing); "
        f"fix or remove it"]
    # a dangling symlink named on the command line is a failure of that input
    code, err = upscale(capsys, src / "gone.png", src / "a.png", "-o", tmp_path / "out2")
    assert code == 5 and err.splitlines()[0] == (
        f"error: {src / 'gone.png'}: a dangling symlink (its target {tmp_path / 'deleted.png'} is missing); "
        f"fix or remove the link")
    assert (tmp_path / "out2" / "a_x4.png").is_file()


def test_output_folder_equal_to_the_input_folder_twice_does_not_upscale_earlier_outputs(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), random_rgb(8, 8))
    code, err = upscale(capsys, src, "-o", src)
    assert code == 0, err
    first = snapshot(src)
    assert sorted(first) == ["a.png", "a_x4.png"]
    code, err = upscale(capsys, src, "-o", src, quiet=False)
    assert code == 0, err
    assert snapshot(src) == first  # no a_x4_x4.png; a.png and the earlier a_x4.png unchanged
    assert warnings_and_errors(err) == [
        f"warning: skipped: 1 earlier output(s) in {src} (*_x4.png, e.g. a_x4.png): -o is the input folder; pass such "
        f"a file by name to upscale it again",
        f"warning: skipped: {src / 'a.png'}: its output a_x4.png is already in the folder (an earlier run's?); remove "
        f"it or choose another -o folder to redo it"]


def test_grey_plus_alpha_comes_out_grey_plus_alpha(tmp_path, capsys):
    grey = random_rgb(10, 12, seed=4)[:, :, 0]
    alpha = np.tile(np.linspace(0, 255, 12).astype(np.uint8), (10, 1))
    src = tmp_path / "ga.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(src)
    code, err = upscale(capsys, src, "-o", tmp_path / "out")
    assert code == 0, err
    out = Image.open(tmp_path / "out" / "ga_x4.png")
    assert out.mode == "LA" and out.size == (48, 40)
    pixels = np.asarray(out)
    np.testing.assert_array_equal(pixels[:, :, 1], upscale_alpha(alpha, 4))
    # the grey channel equals what the same image without alpha gives (alpha does not leak into it)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert upscale(capsys, tmp_path / "g.png", "-o", tmp_path / "out")[0] == 0
    np.testing.assert_array_equal(pixels[:, :, 0], cv2.imread(str(tmp_path / "out" / "g_x4.png"), cv2.IMREAD_UNCHANGED))


def test_a_pipe_is_read_like_process_substitution(tmp_path, capsys):
    """`rsd-upscale <(cat a.png)` passes /dev/fd/N, a pipe that cannot seek."""
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), random_rgb(8, 8))
    fifo = tmp_path / "63"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(img.read_bytes()), daemon=True)
    writer.start()
    code, err = upscale(capsys, fifo, "-o", tmp_path / "out")
    writer.join(timeout=10)
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "out" / "63_x4.png")).shape == (32, 32, 3)
