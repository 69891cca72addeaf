"""The degradation is ResShift's: every parameter range pinned to the official config, kernels to basicsr's formulas.

The official values below are those of ResShift's ``configs/realsr_swinunet_realesrgan256.yaml``
(``degradation:`` block and ``data.train.params``), which RSD's teacher was trained with; the kernel
size rules are those of its realesrgan dataset (odd sizes from 3 below ``blur_kernel_size``).
"""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from rsd_deploy.errors import RSDError
from rsd_deploy.train.degradation import (DegradationConfig, anisotropic_kernel, degrade, final_sinc_kernel,
                                          random_blur_kernel, sinc_kernel)

OFFICIAL = {
    # degradation:
    "scale": 4,
    "resize_prob": (0.2, 0.7, 0.1), "resize_range": (0.15, 1.5), "gaussian_noise_prob": 0.5,
    "noise_range": (1, 30), "poisson_scale_range": (0.05, 3.0), "gray_noise_prob": 0.4, "jpeg_range": (30, 95),
    "second_order_prob": 0.5, "second_blur_prob": 0.8, "resize_prob2": (0.3, 0.4, 0.3),
    "resize_range2": (0.3, 1.2), "gaussian_noise_prob2": 0.5, "noise_range2": (1, 25),
    "poisson_scale_range2": (0.05, 2.5), "gray_noise_prob2": 0.4, "jpeg_range2": (30, 95),
    # data.train.params:
    "blur_kernel_size": 21, "kernel_probs": (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), "sinc_prob": 0.1,
    "blur_sigma": (0.2, 3.0), "betag_range": (0.5, 4.0), "betap_range": (1, 2.0),
    "blur_kernel_size2": 15, "kernel_probs2": (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), "sinc_prob2": 0.1,
    "blur_sigma2": (0.2, 1.5), "betag_range2": (0.5, 4.0), "betap_range2": (1, 2.0), "final_sinc_prob": 0.8,
}


OURS = {"bicubic_prob": 0.0}  # [ours] extensions, off by default so the official pipeline is unchanged


def test_every_parameter_is_the_official_value():
    ours = asdict(DegradationConfig())
    assert set(ours) == set(OFFICIAL) | set(OURS)
    assert all(ours[k] == v for k, v in OURS.items())
    for key, value in OFFICIAL.items():
        assert ours[key] == (tuple(value) if isinstance(value, tuple) else value), key
    cfg = DegradationConfig()
    assert cfg.kernel_sizes(1) == (3, 5, 7, 9, 11, 13, 15, 17, 19)  # not 7..21
    assert cfg.kernel_sizes(2) == (3, 5, 7, 9, 11, 13)


def test_kernels_are_drawn_in_the_official_ranges_and_padded(monkeypatch):
    import rsd_deploy.train.degradation as deg

    drawn = []
    for name in ("anisotropic_kernel", "sinc_kernel"):
        real = getattr(deg, name)
        monkeypatch.setattr(deg, name, lambda size, *a, _real=real, **k: (drawn.append(size), _real(size, *a, **k))[1])
    cfg = DegradationConfig()
    rng = np.random.default_rng(0)
    sizes = {}
    for stage, shape in ((1, (21, 21)), (2, (15, 15)), (3, (15, 15))):
        drawn.clear()
        for _ in range(300):
            k = random_blur_kernel(rng, cfg, stage) if stage < 3 else final_sinc_kernel(rng, cfg)
            if k is not None:
                assert k.shape == shape and k.sum() == pytest.approx(1, abs=1e-4)
        sizes[stage] = set(drawn)
    assert sizes[1] == set(range(3, 20, 2))  # 3..19 (Real-ESRGAN's 7..21 would be wrong here)
    assert sizes[2] == set(range(3, 14, 2)) and sizes[3] == set(range(3, 14, 2))


def test_generalised_gaussian_uses_exponent_beta_on_the_quadratic_form():
    sx, sy, theta, beta = 2.0, 1.0, 0.3, 1.7
    k = anisotropic_kernel(9, sx, sy, theta, beta)
    ax = np.arange(-4, 5, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([sx ** 2, sy ** 2]) @ rot.T)
    q = inv[0, 0] * xx ** 2 + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy ** 2
    ref = np.exp(-0.5 * q ** beta)  # basicsr: exp(-0.5 * (x^T S^-1 x)^beta), not ^(beta / 2)
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-5, atol=1e-8)
    gauss = anisotropic_kernel(9, sx, sy, theta)  # beta 1 = the plain Gaussian
    g = np.exp(-0.5 * q)
    np.testing.assert_allclose(gauss, g / g.sum(), rtol=1e-5, atol=1e-8)
    plateau = anisotropic_kernel(9, sx, sy, theta, beta, plateau=True)
    p = 1 / (q ** beta + 1)
    np.testing.assert_allclose(plateau, p / p.sum(), rtol=1e-5, atol=1e-8)
    # sigma_x > sigma_y: wider along x (columns) than along y (rows)
    wide = anisotropic_kernel(21, 3.0, 0.5, 0.0)
    assert wide[10, 13] > 5 * wide[13, 10]


def test_sinc_is_normalised_and_rings():
    s = sinc_kernel(13, np.pi / 3)
    assert s.sum() == pytest.approx(1.0, abs=1e-5) and s.min() < 0


def test_degrade_output_size_and_resume_determinism():
    hr = np.random.default_rng(1).random((64, 96, 3)).astype(np.float32)
    outs = [degrade(hr, np.random.default_rng(seed)) for seed in range(6)]
    assert all(o.shape == (16, 24, 3) and 0 <= o.min() and o.max() <= 1 for o in outs)
    assert np.array_equal(outs[0], degrade(hr, np.random.default_rng(0)))
    assert len({o.tobytes() for o in outs}) == 6


def test_degradation_config_validation():
    with pytest.raises(RSDError, match="kernel_probs"):
        DegradationConfig(kernel_probs=(1.0, 0.0)).validate()
    with pytest.raises(RSDError, match="blur_kernel_size2"):
        DegradationConfig(blur_kernel_size2=14).validate()
