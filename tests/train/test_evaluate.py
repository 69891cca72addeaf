"""Metrics used for validation and train/RESULTS.md."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.train.evaluate import psnr, rgb_to_y, ssim


def test_psnr_known_value():
    a = torch.zeros(1, 1, 8, 8)
    b = torch.full((1, 1, 8, 8), 255.0 / 10)  # mse = 650.25 -> 10 log10(255^2 / 650.25) = 20 dB
    assert float(psnr(a, b)[0]) == pytest.approx(20.0, abs=1e-9)


def test_luma_matches_bt601():
    white = torch.full((1, 3, 1, 1), 255.0)
    black = torch.zeros(1, 3, 1, 1)
    assert float(rgb_to_y(white)) == pytest.approx(235.0, abs=1e-2)
    assert float(rgb_to_y(black)) == pytest.approx(16.0)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(1, 1, 40, 48, generator=g) * 255).round()
    b = (a + torch.randn(1, 1, 40, 48, generator=g) * 20).clamp(0, 255)
    ref = metrics.structural_similarity(a[0, 0].numpy(), b[0, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=255)
    assert float(ssim(a, b)[0]) == pytest.approx(ref, abs=1e-6)
    assert float(ssim(a, a)[0]) == pytest.approx(1.0)
