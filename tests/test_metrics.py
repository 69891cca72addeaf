"""rsd_deploy.metrics: the one PSNR / SSIM / Y / uint8 implementation, against scikit-image on real images."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rsd_deploy import metrics
from rsd_deploy.errors import ShapeError

from .conftest import DATA


def _pairs(count: int = 3):
    """(bicubic-x4 of the LR, HR) uint8 RGB pairs from the shared ImageNet test pairs (256 x 256)."""
    lq_dir, gt_dir = DATA / "imagenet_val_sr" / "lq", DATA / "imagenet_val_sr" / "gt"
    if not gt_dir.is_dir():
        pytest.skip("shared data is absent")
    out = []
    for gt_path in sorted(gt_dir.iterdir())[:count]:
        hr = cv2.cvtColor(cv2.imread(str(gt_path)), cv2.COLOR_BGR2RGB)
        lr = cv2.cvtColor(cv2.imread(str(lq_dir / gt_path.name)), cv2.COLOR_BGR2RGB)
        up = cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC)
        out.append((up, hr))
    return out


def test_ssim_equals_scikit_image_on_real_images():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    def reference(a, b, **kw):
        return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, **kw)

    for sr, hr in _pairs():
        ys, yh = metrics.rgb_to_y(sr), metrics.rgb_to_y(hr)
        m = metrics.sr_metrics(sr, hr)
        assert m["ssim_y"] == pytest.approx(reference(ys, yh), abs=1e-9)
        assert m["ssim_rgb"] == pytest.approx(reference(sr.astype(np.float64), hr.astype(np.float64),
                                                        channel_axis=-1), abs=1e-9)
        assert m["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(hr, sr, data_range=255), abs=1e-9)
        assert m["psnr_y"] == pytest.approx(peak_signal_noise_ratio(yh, ys, data_range=255), abs=1e-9)
        assert 15 < m["psnr_y"] < 40 and 0.2 < m["ssim_y"] < 0.95  # a plausible bicubic baseline, not a tautology


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    _, hr = _pairs(1)[0]
    assert metrics.ssim(hr, hr) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    mild, strong = (np.clip(hr.astype(int) + rng.integers(-a, a + 1, hr.shape), 0, 255) for a in (5, 40))
    assert metrics.ssim(strong, hr) < metrics.ssim(mild, hr) < 1.0
    with pytest.raises(ShapeError, match="at least 11x11"):
        metrics.ssim(hr[:8, :8], hr[:8, :8])
    with pytest.raises(ShapeError, match="differently shaped"):
        metrics.ssim(hr[:64], hr)


def test_psnr_known_value_identity_and_data_range():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[..., 0] += 10  # MSE = 100 / 3
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / (100 / 3)))
    assert metrics.psnr(a, a) == float("inf")
    x = np.zeros((4, 4))
    assert metrics.psnr(x, x + 0.1, data_range=1.0) == pytest.approx(20.0)
    assert metrics.psnr(torch.zeros(4, 4), torch.full((4, 4), 0.1), data_range=1.0) == pytest.approx(20.0)


def test_y_channel_is_bt601_on_any_channel_axis():
    assert metrics.rgb_to_y(np.array([[[0, 0, 0]]], np.uint8))[0, 0] == pytest.approx(16.0)
    assert metrics.rgb_to_y(np.array([[[255, 255, 255]]], np.uint8))[0, 0] == pytest.approx(235.0)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3))
    chw = rgb.transpose(2, 0, 1)
    np.testing.assert_array_equal(metrics.rgb_to_y(chw, channel_axis=0), metrics.rgb_to_y(rgb))
    assert metrics.rgb_to_y(rgb)[2, 3] == pytest.approx(16 + (65.481 * rgb[2, 3, 0] + 128.553 * rgb[2, 3, 1]
                                                               + 24.966 * rgb[2, 3, 2]) / 255)
    with pytest.raises(ShapeError):
        metrics.rgb_to_y(np.zeros((4, 4, 4)))


def test_uint8_rounding_is_what_rsd_upscale_writes():
    u = (np.arange(16 * 16 * 3) % 256).astype(np.uint8).reshape(16, 16, 3)
    model = (u.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)  # image_io.to_model_range
    np.testing.assert_array_equal(metrics.to_uint8(model), u)
    np.testing.assert_array_equal(metrics.to_uint8(torch.from_numpy(model)), u)
    np.testing.assert_array_equal(metrics.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])), [0, 0, 128, 255, 255])
    assert metrics.quantize(np.array([1.0, 0.0]), 65535, np.uint16).tolist() == [65535, 32768]


def test_colour_error_known_cases_and_shape_errors():
    rng = np.random.default_rng(0)
    img = rng.integers(20, 230, (6, 5, 3), dtype=np.uint8)
    assert metrics.colour_error(img, img) == 0.0
    shifted = img.copy()
    shifted[..., 1] += 10  # +10 levels on G only: (0 + 10 + 0) / 3
    assert metrics.colour_error(shifted, img) == pytest.approx(10 / 3, abs=1e-12)
    assert metrics.colour_error(img, shifted) == pytest.approx(10 / 3, abs=1e-12)
    # by hand: per-channel means of a 2x1 image
    a = np.array([[[0, 0, 0]], [[10, 20, 30]]], np.uint8)  # means 5, 10, 15
    b = np.array([[[4, 4, 4]], [[4, 4, 4]]], np.uint8)  # means 4, 4, 4
    assert metrics.colour_error(a, b) == pytest.approx((1 + 6 + 11) / 3, abs=1e-12)
    with pytest.raises(ShapeError, match="differently shaped"):
        metrics.colour_error(img, img[:5])
    with pytest.raises(ShapeError, match="RGB"):
        metrics.colour_error(img[..., 0], img[..., 0])


def test_detail_ratio_forward_differences_by_hand():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert metrics.detail_ratio(img, img) == pytest.approx(1.0, abs=1e-12)
    flat = np.full_like(img, 128)
    assert metrics.detail_ratio(flat, img) == 0.0
    with pytest.raises(ShapeError, match="flat"):
        metrics.detail_ratio(img, flat)
    with pytest.raises(ShapeError, match="differently shaped"):
        metrics.detail_ratio(img, img[:, :8])

    def mean_grad(rgb):  # independent: loops over pixels, Y by its BT.601 formula
        y = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
        total = 0.0
        for i in range(y.shape[0] - 1):
            for j in range(y.shape[1] - 1):
                total += ((y[i, j + 1] - y[i, j]) ** 2 + (y[i + 1, j] - y[i, j]) ** 2) ** 0.5
        return total / ((y.shape[0] - 1) * (y.shape[1] - 1))

    other = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    expected = mean_grad(other.astype(np.float64)) / mean_grad(img.astype(np.float64))
    assert metrics.detail_ratio(other, img) == pytest.approx(expected, rel=1e-12)
    # a grey horizontal ramp of 3 levels per column: Y gradient 3 * (65.481 + 128.553 + 24.966) / 255 everywhere
    ramp = np.repeat(np.repeat((np.arange(8) * 3).astype(np.uint8)[None, :, None], 4, 0), 3, 2)
    assert metrics.mean_gradient(metrics.rgb_to_y(ramp)) == pytest.approx(3 * 219 / 255, rel=1e-12)
    # a blurred image has less detail than its source
    blurred = cv2.GaussianBlur(img, (3, 3), 1.0)
    assert metrics.detail_ratio(blurred, img) < 0.8
