"""Quality side of the benchmark: metrics through rsd_deploy.metrics, backend differences, image folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rsd_deploy.bench.quality import difference, image_metrics, list_images, read_rgb, to_tensor, to_uint8
from rsd_deploy.errors import ImageIOError
from rsd_deploy.metrics import sr_metrics


def test_ssim_and_metrics_against_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    m = image_metrics(sr, hr)
    assert m["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(hr, sr, data_range=255))
    assert 0 < m["ssim_rgb"] < 1 and 0 < m["ssim_y"] < 1
    assert m == sr_metrics(sr, hr)  # the one implementation (tests/test_metrics.py checks it on real images)
    with pytest.raises(ImageIOError):
        image_metrics(sr[:16], hr)


def test_difference_and_uint8_round_trip():
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    d = difference(x + 0.01, x)
    assert d["max_abs"] == pytest.approx(0.01, abs=1e-6) and d["mean_abs"] == pytest.approx(0.01, abs=1e-6)
    u = (np.arange(8 * 8 * 3) % 256).astype(np.uint8).reshape(8, 8, 3)
    assert np.array_equal(to_uint8(to_tensor(u)), u)


def test_image_folder_errors(tmp_path, shared_dir):
    with pytest.raises(ImageIOError, match="not a folder"):
        list_images(tmp_path / "missing")
    with pytest.raises(ImageIOError, match="no images"):
        list_images(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageIOError, match="cannot decode image"):
        read_rgb(bad)
    lq = list_images(shared_dir / "data" / "imagenet_val_sr" / "lq")
    assert read_rgb(lq[0]).shape == (64, 64, 3)
