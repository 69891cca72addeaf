"""Real-ESRGAN-style two-stage degradation (blur -> resize -> noise -> JPEG, twice, then sinc).

Written from the Real-ESRGAN paper (Wang et al., 2021) description; the parameter defaults are the
published Real-ESRGAN x4 values, which ResShift's ``realesrgan`` data block reuses. Our docs do not
list ResShift's own block, so ``second_order_prob`` (ResShift applies the second stage with
probability 0.5) is recorded as a choice in :class:`DegradationConfig`.

All functions work on float32 HWC RGB numpy arrays in [0, 1] and take an explicit
``numpy.random.Generator`` so a seeded dataset is reproducible, worker by worker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


@dataclass(frozen=True)
class DegradationConfig:
    """Parameters of the two-stage degradation; defaults = published Real-ESRGAN x4 settings."""

    scale: int = 4
    # stage 1
    kernel_range: Tuple[int, int] = (7, 21)  # odd kernel sizes
    kernel_probs: Tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: Tuple[float, float] = (0.2, 3.0)
    betag_range: Tuple[float, float] = (0.5, 4.0)
    betap_range: Tuple[float, float] = (1.0, 2.0)
    resize_prob: Tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: Tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: Tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: Tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: Tuple[float, float] = (30.0, 95.0)
    # stage 2
    second_order_prob: float = 0.5  # [ours, from ResShift] chance to apply stage 2 at all
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: Tuple[float, float] = (0.2, 1.5)
    resize_prob2: Tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: Tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: Tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: Tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: Tuple[float, float] = (30.0, 95.0)
    final_sinc_prob: float = 0.8

    def validate(self) -> None:
        from rsd_deploy.errors import RSDError

        if self.scale < 1:
            raise RSDError(f"degradation.scale must be >= 1, got {self.scale}")
        if len(self.kernel_probs) != len(KERNEL_TYPES) or abs(sum(self.kernel_probs) - 1) > 1e-6:
            raise RSDError("degradation.kernel_probs must be 6 probabilities summing to 1")
        for name in ("resize_prob", "resize_prob2"):
            probs = getattr(self, name)
            if len(probs) != 3 or abs(sum(probs) - 1) > 1e-6:
                raise RSDError(f"degradation.{name} must be 3 probabilities (up, down, keep) summing to 1")


# ----------------------------------------------------------------------------------- kernels
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    return np.meshgrid(ax, ax)


def anisotropic_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 2.0,
                       plateau: bool = False) -> np.ndarray:
    """Generalised Gaussian (beta) or plateau kernel with covariance diag(sx^2, sy^2) rotated by theta."""
    xx, yy = _grid(size)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rot.T
    inv = np.linalg.inv(cov)
    pts = np.stack([xx, yy], -1)
    quad = np.einsum("...i,ij,...j->...", pts, inv, pts)  # Mahalanobis distance squared
    if plateau:
        kernel = 1.0 / (np.power(quad, beta) + 1.0)
    else:
        kernel = np.exp(-0.5 * np.power(quad, beta / 2.0))
    return (kernel / kernel.sum()).astype(np.float32)


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Circular low-pass (2-D jinc) kernel that produces ringing/overshoot artefacts."""
    xx, yy = _grid(size)
    r = np.sqrt(xx ** 2 + yy ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        from scipy.special import j1  # scipy ships with scikit-image

        kernel = cutoff * j1(cutoff * r) / (2 * math.pi * r)
    kernel[size // 2, size // 2] = cutoff ** 2 / (4 * math.pi)
    return (kernel / kernel.sum()).astype(np.float32)


def random_blur_kernel(rng: np.random.Generator, cfg: DegradationConfig, sigma_range: Tuple[float, float],
                       sinc_prob: float) -> np.ndarray:
    size = int(rng.choice(np.arange(cfg.kernel_range[0], cfg.kernel_range[1] + 1, 2)))
    if rng.random() < sinc_prob:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff)
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=np.asarray(cfg.kernel_probs)))]
    sx = rng.uniform(*sigma_range)
    isotropic = kind.endswith("iso") and not kind.endswith("aniso")
    sy = sx if isotropic else rng.uniform(*sigma_range)
    theta = 0.0 if isotropic else rng.uniform(-math.pi, math.pi)
    if kind.startswith("generalized"):
        beta = rng.uniform(cfg.betag_range[0], 1.0) if rng.random() < 0.5 else rng.uniform(1.0, cfg.betag_range[1])
        return anisotropic_kernel(size, sx, sy, theta, beta)
    if kind.startswith("plateau"):
        beta = rng.uniform(*cfg.betap_range)
        return anisotropic_kernel(size, sx, sy, theta, beta, plateau=True)
    return anisotropic_kernel(size, sx, sy, theta, 2.0)


# ----------------------------------------------------------------------------------- ops
def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _random_resize(img: np.ndarray, rng: np.random.Generator, probs: Tuple[float, float, float],
                   scale_range: Tuple[float, float]) -> np.ndarray:
    mode = int(rng.choice(3, p=np.asarray(probs)))
    if mode == 0:
        scale = rng.uniform(1.0, scale_range[1])
    elif mode == 1:
        scale = rng.uniform(scale_range[0], 1.0)
    else:
        scale = 1.0
    h, w = img.shape[:2]
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC][int(rng.integers(3))]
    return cv2.resize(img, (new_w, new_h), interpolation=interp)


def _add_noise(img: np.ndarray, rng: np.random.Generator, gaussian_prob: float, sigma_range: Tuple[float, float],
               poisson_range: Tuple[float, float], gray_prob: float) -> np.ndarray:
    gray = rng.random() < gray_prob
    shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
    if rng.random() < gaussian_prob:
        sigma = rng.uniform(*sigma_range) / 255.0
        noise = rng.standard_normal(shape).astype(np.float32) * sigma
    else:
        # Poisson noise: counts from 8-bit-ish levels, scaled
        scale = rng.uniform(*poisson_range)
        base = img.mean(axis=2, keepdims=True) if gray else img
        vals = np.clip(base, 0, 1) * 255.0
        noisy = rng.poisson(vals).astype(np.float32)
        noise = (noisy - vals) / 255.0 * scale
    return np.clip(img + noise, 0.0, 1.0)


def _jpeg(img: np.ndarray, rng: np.random.Generator, quality_range: Tuple[float, float]) -> np.ndarray:
    quality = int(rng.uniform(*quality_range))
    bgr = cv2.cvtColor((np.clip(img, 0, 1) * 255.0).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:  # pragma: no cover - encoder failure is not expected for valid arrays
        return img
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if dec is None:  # pragma: no cover - decoding our own JPEG is not expected to fail
        return img
    return cv2.cvtColor(dec, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def degrade(hr: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DegradationConfig()) -> np.ndarray:
    """Degrade one HR image to LR.

    Args:
        hr: (H, W, 3) float32 RGB in [0, 1]; H and W multiples of ``cfg.scale``.
        rng: the random source (seeded per sample by the dataset).
    Returns:
        (H/scale, W/scale, 3) float32 RGB in [0, 1], quantised to 8 bits like a saved JPEG/PNG.
    """
    h, w = hr.shape[:2]
    out_h, out_w = h // cfg.scale, w // cfg.scale
    img = _filter(hr.astype(np.float32), random_blur_kernel(rng, cfg, cfg.blur_sigma, cfg.sinc_prob))
    img = _random_resize(img, rng, cfg.resize_prob, cfg.resize_range)
    img = _add_noise(img, rng, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range, cfg.gray_noise_prob)
    img = _jpeg(img, rng, cfg.jpeg_range)
    if rng.random() < cfg.second_order_prob:
        if rng.random() < cfg.second_blur_prob:
            img = _filter(img, random_blur_kernel(rng, cfg, cfg.blur_sigma2, cfg.sinc_prob2))
        # second resize is relative to the final size, as in Real-ESRGAN
        mode = int(rng.choice(3, p=np.asarray(cfg.resize_prob2)))
        scale = {0: rng.uniform(1.0, cfg.resize_range2[1]), 1: rng.uniform(cfg.resize_range2[0], 1.0), 2: 1.0}[mode]
        size = (max(1, int(out_w * scale)), max(1, int(out_h * scale)))
        img = cv2.resize(img, size, interpolation=[cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC][int(rng.integers(3))])
        img = _add_noise(img, rng, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                         cfg.gray_noise_prob2)
    # final: resize back + sinc, and JPEG, in random order (Real-ESRGAN)
    final_kernel = sinc_kernel(int(rng.choice(np.arange(cfg.kernel_range[0], cfg.kernel_range[1] + 1, 2))),
                               rng.uniform(math.pi / 3, math.pi)) if rng.random() < cfg.final_sinc_prob else None
    interp = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC][int(rng.integers(3))]
    if rng.random() < 0.5:
        img = cv2.resize(img, (out_w, out_h), interpolation=interp)
        if final_kernel is not None:
            img = _filter(img, final_kernel)
        img = _jpeg(img, rng, cfg.jpeg_range2)
    else:
        img = _jpeg(img, rng, cfg.jpeg_range2)
        img = cv2.resize(img, (out_w, out_h), interpolation=interp)
        if final_kernel is not None:
            img = _filter(img, final_kernel)
    return np.clip(np.round(img * 255.0) / 255.0, 0.0, 1.0).astype(np.float32)
