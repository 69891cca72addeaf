"""Image reading/writing: formats, bit depths, grey/RGBA, EXIF orientation, padding, atomic writes."""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsd_deploy.errors import ImageIOError
from rsd_deploy.pipeline.image_io import (SRCanvas, apply_orientation, exif_orientation, pad_to_multiple,
                                          read_image, to_model_range, upscale_alpha, write_image_atomic)


def exif_blob(orientation: int, big_endian: bool = True) -> bytes:
    """A minimal EXIF block (TIFF structure) holding only the orientation tag."""
    o = ">" if big_endian else "<"
    return ((b"MM" if big_endian else b"II") + struct.pack(o + "HI", 42, 8) + struct.pack(o + "H", 1)
            + struct.pack(o + "HHI", 0x0112, 3, 1) + struct.pack(o + "HH", orientation, 0) + struct.pack(o + "I", 0))


def write_with_exif(path: Path, image: np.ndarray, orientation: int) -> None:
    ok, buf = cv2.imencodeWithMetadata(path.suffix, image, [cv2.IMAGE_METADATA_EXIF],
                                       [np.frombuffer(exif_blob(orientation), np.uint8)])
    assert ok
    buf.tofile(str(path))


def asymmetric_bgr(h=20, w=36) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:6, :9] = (255, 255, 255)  # a block in the top-left corner
    img[:, -4:, 0] = 200  # blue right edge
    img[-3:, :, 2] = 180  # red bottom edge
    return img


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_formats_round_trip_rgb_order(tmp_path, ext):
    bgr = (np.random.default_rng(1).random((9, 14, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"a{ext}"
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []
    assert cv2.imwrite(str(path), bgr, params)
    img = read_image(path)
    assert img.rgb.dtype == np.uint8 and img.alpha is None and not img.grayscale
    np.testing.assert_array_equal(img.rgb, bgr[:, :, ::-1])


def test_sixteen_bit_grey_and_rgba(tmp_path):
    g16 = (np.arange(7 * 5).reshape(7, 5) * 1800).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    img = read_image(tmp_path / "g16.png")
    assert img.grayscale and img.dtype == np.uint16 and img.max_value == 65535
    np.testing.assert_array_equal(img.rgb, np.repeat(g16[:, :, None], 3, axis=2))

    bgra = np.dstack([asymmetric_bgr(), np.full((20, 36), 77, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    img = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(img.alpha, bgra[:, :, 3])
    np.testing.assert_array_equal(img.rgb, bgra[:, :, 2::-1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv_color_decoding(tmp_path, orientation):
    """IMREAD_UNCHANGED ignores EXIF; our reader must match what IMREAD_COLOR shows (it applies EXIF)."""
    path = tmp_path / "o.jpg"
    write_with_exif(path, asymmetric_bgr(), orientation)
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if orientation in (5, 6, 7, 8):
        assert expected.shape[:2] == (36, 20)
    np.testing.assert_array_equal(read_image(path).rgb, expected[:, :, ::-1])


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_without_the_opencv_metadata_api(tmp_path, monkeypatch, orientation):
    """Older OpenCV builds lack imdecodeWithMetadata: the reader falls back to OpenCV's own EXIF handling."""
    path = tmp_path / "o.jpg"
    write_with_exif(path, asymmetric_bgr(), orientation)
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
    monkeypatch.delattr(cv2, "imdecodeWithMetadata")
    np.testing.assert_array_equal(read_image(path).rgb, expected[:, :, ::-1])


def test_exif_orientation_rotates_alpha_too(tmp_path):
    bgra = np.dstack([asymmetric_bgr(), np.tile(np.arange(36, dtype=np.uint8), (20, 1))])
    write_with_exif(tmp_path / "o.png", bgra, 6)
    img = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(img.alpha, np.rot90(bgra[:, :, 3], k=-1))
    np.testing.assert_array_equal(img.rgb, np.rot90(bgra[:, :, 2::-1], k=-1))


def test_exif_parser_both_byte_orders_and_garbage():
    for o in range(1, 9):
        assert exif_orientation(exif_blob(o, True)) == o
        assert exif_orientation(b"Exif\x00\x00" + exif_blob(o, False)) == o
    assert exif_orientation(b"") == 1
    assert exif_orientation(b"MM\x00*\x00\x00\xff\xff") == 1  # IFD offset past the end
    assert exif_orientation(exif_blob(9)) == 1
    a = np.arange(6).reshape(2, 3)
    assert apply_orientation(a, 1) is a
    np.testing.assert_array_equal(apply_orientation(a, 3), a[::-1, ::-1])


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"\x89PNG\r\n\x1a\n" + b"junk" * 20, "cannot decode"),
                                            (b"hello, not an image", "cannot decode")])
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageIOError) as e:
        read_image(path)
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg
    assert e.value.exit_code == 5


def test_missing_file_and_folder_input(tmp_path):
    with pytest.raises(ImageIOError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageIOError, match="folder"):
        read_image(tmp_path)


def test_float_tiff_is_rejected(tmp_path):
    cv2.imwrite(str(tmp_path / "f.tif"), np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageIOError, match="float32"):
        read_image(tmp_path / "f.tif")


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (33, 17), (16, 16), (40, 64)])
def test_pad_to_multiple_reflects_where_possible_else_replicates(h, w):
    x = torch.randn(1, 3, h, w)
    y = pad_to_multiple(x, 16)
    H, W = -(-h // 16) * 16, -(-w // 16) * 16
    assert y.shape == (1, 3, H, W)
    assert torch.equal(y[..., :h, :w], x)
    if W - w and W - w < w:  # reflect along the width
        assert torch.equal(y[..., :h, w:], F.pad(x, (0, W - w, 0, 0), mode="reflect")[..., w:])
    elif W - w:
        assert torch.equal(y[..., :h, w:], x[..., -1:].expand(-1, -1, -1, W - w))
    if H - h and H - h >= h:  # replicate along the height
        assert torch.equal(y[..., h:, :], y[..., h - 1:h, :].expand(-1, -1, H - h, -1))


def test_to_model_range_and_canvas_quantisation():
    x = to_model_range(np.array([[[0, 255, 128]]], np.uint8))
    assert x.dtype == np.float32 and x[0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    assert to_model_range(np.array([[[65535, 0, 0]]], np.uint16))[0, 0, 0] == pytest.approx(1.0)

    from rsd_deploy.pipeline.image_io import LRImage

    lr = LRImage(Path("x.png"), np.zeros((1, 2, 3), np.uint16), None, grayscale=False)
    canvas = SRCanvas(lr, 4)
    rows = np.tile(np.array([-2.0, 0.0, 1.5], np.float32), (4, 8, 1))  # out of range values clamp
    canvas.write_rows(0, rows)
    assert canvas.pixels.dtype == np.uint16 and canvas.pixels.shape == (4, 8, 3)
    assert canvas.pixels[0, 0].tolist() == [65535, 32768, 0]  # BGR order: B=1.5->max, G=0->mid, R=-2->0

    grey = SRCanvas(LRImage(Path("g.png"), np.zeros((1, 1, 3), np.uint8), None, grayscale=True), 4)
    grey.write_rows(0, np.tile(np.array([1.0, -1.0, -1.0], np.float32), (4, 4, 1)))
    assert grey.pixels.shape == (4, 4) and int(grey.pixels[0, 0]) == round(0.299 * 255)


def test_alpha_upscale_is_a_clipped_plain_resize():
    alpha = np.array([[0, 255], [255, 0]], np.uint8)
    up = upscale_alpha(alpha, 4)
    assert up.shape == (8, 8) and up.dtype == np.uint8
    ref = np.clip(np.rint(cv2.resize(alpha.astype(np.float32), (8, 8), interpolation=cv2.INTER_CUBIC)), 0, 255)
    np.testing.assert_array_equal(up, ref)


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    dst = tmp_path / "out.png"
    dst.write_bytes(b"old")
    img = np.full((3, 5, 3), 9, np.uint8)
    write_image_atomic(dst, img)
    np.testing.assert_array_equal(cv2.imread(str(dst)), img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_failure_keeps_the_folder_clean(tmp_path):
    blocker = tmp_path / "out.png"
    blocker.mkdir()  # os.replace onto a folder fails
    with pytest.raises(ImageIOError, match="cannot write output"):
        write_image_atomic(blocker, np.zeros((2, 2, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"] and blocker.is_dir()
    with pytest.raises(ImageIOError, match="cannot write output"):
        write_image_atomic(tmp_path / "missing_dir" / "x.png", np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize("ext, image, channels, bits", [
    (".png", np.zeros((7, 10, 3), np.uint8), 3, 8),
    (".png", np.zeros((7, 10), np.uint16), 1, 16),
    (".png", np.zeros((7, 10, 4), np.uint8), 4, 8),
    (".jpg", np.zeros((7, 10, 3), np.uint8), 3, 8),
    (".tif", np.zeros((7, 10, 3), np.uint8), 3, 8),
    (".webp", np.zeros((7, 10, 3), np.uint8), 3, 8),
    (".bmp", np.zeros((7, 10, 3), np.uint8), 3, 8),
])
def test_header_gives_size_channels_and_depth_without_decoding(ext, image, channels, bits):
    from rsd_deploy.pipeline.image_header import HeaderInfo, read_header

    data = cv2.imencode(ext, image)[1].tobytes()
    assert read_header(data) == HeaderInfo(width=10, height=7, channels=channels, bits=bits)
    assert read_header(b"not an image") is None  # unknown to Pillow: OpenCV gets to try


def test_grey_alpha_png_round_trips_through_our_encoder(tmp_path):
    from PIL import Image

    from rsd_deploy.pipeline.image_header import encode_png_grey_alpha

    for dtype, mode in ((np.uint8, "LA"), (np.uint16, None)):
        pixels = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (5, 6, 2)).astype(dtype)
        path = tmp_path / f"ga{np.dtype(dtype).itemsize}.png"
        path.write_bytes(encode_png_grey_alpha(pixels))
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # OpenCV expands grey+alpha to BGRA
        np.testing.assert_array_equal(back[:, :, 0], pixels[:, :, 0])
        np.testing.assert_array_equal(back[:, :, 3], pixels[:, :, 1])
        if mode:
            assert Image.open(path).mode == mode
        assert read_image(path).grayscale and read_image(path).alpha is not None
