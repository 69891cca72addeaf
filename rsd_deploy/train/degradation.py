"""ResShift's Real-ESRGAN-style two-stage degradation (blur -> resize -> noise -> JPEG, twice, then sinc).

Our own implementation of the pipeline ResShift trains its teacher with (the ``realesrgan`` data
block of ``configs/realsr_swinunet_realesrgan256.yaml``: kernels drawn per sample in the dataset,
the rest applied in the trainer; basicsr's kernel formulas). Every parameter of that block is a
field of :class:`DegradationConfig` with the official value as its default; ``tests/train/
test_degradation.py`` pins them. What is the same as the official code:

* blur kernels: odd sizes 3..19 in stage 1 (zero-padded to ``blur_kernel_size`` 21) and 3..13 in
  stage 2 and for the final sinc (padded to ``blur_kernel_size2`` 15); six kernel families with
  the official probabilities; generalised Gaussian ``exp(-0.5 q^beta)`` and plateau
  ``1 / (q^beta + 1)`` on the Mahalanobis form q (exponent beta, not beta/2), beta drawn below or
  above 1 with probability 1/2; sinc cut-off U(pi/3, pi) below size 13, else U(pi/5, pi);
* resizes with torch's ``area`` / ``bilinear`` / ``bicubic`` interpolation at the official sizes
  (stage 1 by ``scale_factor``, stage 2 to ``int(h / sf * scale)``, final to ``h // sf``);
* Gaussian noise (sigma/255, grey with probability 0.4) and Poisson noise (levels = next power
  of two of the distinct 8-bit values, grey on BT.601 luma), clipped;
* the second stage with probability ``second_order_prob``, its blur with ``second_blur_prob``;
  the final [resize + sinc (or identity)] and JPEG in random order; rounding to 8 bits.

Known differences (documented in DISTILLATION.md's notes on our port): JPEG goes through OpenCV's
libjpeg with the quality truncated to an integer (ResShift: DiffJPEG with a float quality, same
standard tables and 4:2:0 subsampling); the resize mode, noise type and stage order are drawn per
sample (ResShift draws them once per batch; the optional pair queue, ``data.queue_size``, mixes
batches as in ResShift). ``rescale_gt`` (the HR square) lives in ``data.py``.

All functions work on float32 HWC RGB numpy arrays in [0, 1] and take an explicit
``numpy.random.Generator`` so a seeded dataset is reproducible, worker by worker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class DegradationConfig:
    """Parameters of the two-stage degradation; defaults = ResShift's realsr x4 ``realesrgan`` block."""

    scale: int = 4  # degradation.sf
    # kernels (data.train.params)
    blur_kernel_size: int = 21  # stage-1 kernels: odd sizes 3 .. blur_kernel_size - 2, zero-padded to this
    kernel_probs: Tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: Tuple[float, float] = (0.2, 3.0)
    betag_range: Tuple[float, float] = (0.5, 4.0)
    betap_range: Tuple[float, float] = (1.0, 2.0)
    blur_kernel_size2: int = 15  # stage-2 and final sinc kernels: odd sizes 3 .. blur_kernel_size2 - 2
    kernel_probs2: Tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: Tuple[float, float] = (0.2, 1.5)
    betag_range2: Tuple[float, float] = (0.5, 4.0)
    betap_range2: Tuple[float, float] = (1.0, 2.0)
    final_sinc_prob: float = 0.8
    # stage 1 (degradation block)
    resize_prob: Tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: Tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: Tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: Tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: Tuple[float, float] = (30.0, 95.0)
    # stage 2
    second_order_prob: float = 0.5
    second_blur_prob: float = 0.8
    resize_prob2: Tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: Tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: Tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: Tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: Tuple[float, float] = (30.0, 95.0)
    # [ours] share of pairs made by plain bicubic x4 downsampling instead (antialiased, as PIL's),
    # so a model also does well on bicubic benchmarks; ResShift itself uses 0
    bicubic_prob: float = 0.0

    def kernel_sizes(self, stage: int) -> Tuple[int, ...]:
        """The odd kernel sizes drawn in a stage (1, or 2 = stage 2 and the final sinc)."""
        pad = self.blur_kernel_size if stage == 1 else self.blur_kernel_size2
        return tuple(range(3, pad, 2))

    def validate(self) -> None:
        from rsd_deploy.errors import RSDError

        if self.scale < 1:
            raise RSDError(f"degradation.scale must be >= 1, got {self.scale}")
        if not 0.0 <= self.bicubic_prob <= 1.0:
            raise RSDError(f"degradation.bicubic_prob must be in [0, 1], got {self.bicubic_prob}")
        for name in ("blur_kernel_size", "blur_kernel_size2"):
            size = getattr(self, name)
            if size < 5 or size % 2 == 0:
                raise RSDError(f"degradation.{name} must be an odd size >= 5 (official 21 / 15), got {size}")
        for name in ("kernel_probs", "kernel_probs2"):
            probs = getattr(self, name)
            if len(probs) != len(KERNEL_TYPES) or abs(sum(probs) - 1) > 1e-6:
                raise RSDError(f"degradation.{name} must be 6 probabilities summing to 1")
        for name in ("resize_prob", "resize_prob2"):
            probs = getattr(self, name)
            if len(probs) != 3 or abs(sum(probs) - 1) > 1e-6:
                raise RSDError(f"degradation.{name} must be 3 probabilities (up, down, keep) summing to 1")


# ----------------------------------------------------------------------------------- kernels
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    return np.meshgrid(ax, ax)


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad an odd square kernel to ``size`` x ``size`` (centred; the filter result is unchanged)."""
    pad = (size - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad))) if pad > 0 else kernel


def anisotropic_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 1.0,
                       plateau: bool = False) -> np.ndarray:
    """``exp(-0.5 q^beta)`` (beta 1: Gaussian; else generalised Gaussian) or plateau ``1 / (q^beta + 1)``,
    q the squared Mahalanobis distance for covariance diag(sx^2, sy^2) rotated by theta."""
    xx, yy = _grid(size)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rot.T
    inv = np.linalg.inv(cov)
    pts = np.stack([xx, yy], -1)
    quad = np.einsum("...i,ij,...j->...", pts, inv, pts)
    if plateau:
        kernel = 1.0 / (np.power(quad, beta) + 1.0)
    else:
        kernel = np.exp(-0.5 * np.power(quad, beta))
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


def _beta(rng: np.random.Generator, beta_range: Tuple[float, float]) -> float:
    """Exponent below 1 or above 1 with probability 1/2 each (basicsr's rule for both families)."""
    if rng.random() < 0.5:
        return float(rng.uniform(beta_range[0], 1.0))
    return float(rng.uniform(1.0, beta_range[1]))


def random_blur_kernel(rng: np.random.Generator, cfg: DegradationConfig, stage: int = 1) -> np.ndarray:
    """One blur kernel of ``stage`` (1 or 2), padded to ``blur_kernel_size`` / ``blur_kernel_size2``."""
    if stage == 1:
        probs, sinc_prob, sigma, betag, betap, pad = (cfg.kernel_probs, cfg.sinc_prob, cfg.blur_sigma,
                                                      cfg.betag_range, cfg.betap_range, cfg.blur_kernel_size)
    else:
        probs, sinc_prob, sigma, betag, betap, pad = (cfg.kernel_probs2, cfg.sinc_prob2, cfg.blur_sigma2,
                                                      cfg.betag_range2, cfg.betap_range2, cfg.blur_kernel_size2)
    size = int(rng.choice(cfg.kernel_sizes(stage)))
    if rng.random() < sinc_prob:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return pad_kernel(sinc_kernel(size, cutoff), pad)
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=np.asarray(probs)))]
    sx = rng.uniform(*sigma)
    isotropic = kind.endswith("iso") and not kind.endswith("aniso")
    sy = sx if isotropic else rng.uniform(*sigma)
    theta = 0.0 if isotropic else rng.uniform(-math.pi, math.pi)
    if kind.startswith("generalized"):
        kernel = anisotropic_kernel(size, sx, sy, theta, _beta(rng, betag))
    elif kind.startswith("plateau"):
        kernel = anisotropic_kernel(size, sx, sy, theta, _beta(rng, betap), plateau=True)
    else:
        kernel = anisotropic_kernel(size, sx, sy, theta, 1.0)
    return pad_kernel(kernel, pad)


def final_sinc_kernel(rng: np.random.Generator, cfg: DegradationConfig) -> Optional[np.ndarray]:
    """The final sinc (sizes of stage 2, cut-off U(pi/3, pi), padded), or None (the identity pulse)."""
    if rng.random() >= cfg.final_sinc_prob:
        return None
    size = int(rng.choice(cfg.kernel_sizes(2)))
    return pad_kernel(sinc_kernel(size, rng.uniform(math.pi / 3, math.pi)), cfg.blur_kernel_size2)


# ----------------------------------------------------------------------------------- ops
def _filter(img: np.ndarray, kernel: Optional[np.ndarray]) -> np.ndarray:
    # correlation with reflect-101 borders, as basicsr's filter2D (reflect pad + conv2d)
    if kernel is None:
        return img
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _resize(img: np.ndarray, mode: str, size: Optional[Tuple[int, int]] = None,
            scale: Optional[float] = None) -> np.ndarray:
    """torch ``F.interpolate`` (the official resize) on an HWC array: to ``size`` (h, w) or by ``scale``."""
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    y = F.interpolate(x, size=size, scale_factor=None if size is not None else scale, mode=mode)
    return y[0].numpy().transpose(1, 2, 0)


def _resize_scale(rng: np.random.Generator, probs: Tuple[float, float, float],
                  scale_range: Tuple[float, float]) -> float:
    mode = int(rng.choice(3, p=np.asarray(probs)))
    if mode == 0:
        return float(rng.uniform(1.0, scale_range[1]))
    if mode == 1:
        return float(rng.uniform(scale_range[0], 1.0))
    return 1.0


def _mode(rng: np.random.Generator) -> str:
    return RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]


def _luma(img: np.ndarray) -> np.ndarray:
    return (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2])[..., None]


def _poisson(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise of an image quantised to 8 bits, with levels = next power of two of its distinct values."""
    q = np.clip(np.round(base * 255.0), 0, 255) / 255.0
    levels = 2 ** math.ceil(math.log2(max(len(np.unique(q)), 1)))
    return (rng.poisson(q * levels).astype(np.float32) / levels - q).astype(np.float32)


def _add_noise(img: np.ndarray, rng: np.random.Generator, gaussian_prob: float, sigma_range: Tuple[float, float],
               poisson_range: Tuple[float, float], gray_prob: float) -> np.ndarray:
    gaussian = rng.random() < gaussian_prob
    gray = rng.random() < gray_prob
    if gaussian:
        sigma = rng.uniform(*sigma_range) / 255.0
        shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
        noise = rng.standard_normal(shape).astype(np.float32) * sigma
    else:
        scale = rng.uniform(*poisson_range)
        noise = _poisson(_luma(img) if gray else img, rng) * scale
    return np.clip(img + noise, 0.0, 1.0).astype(np.float32)


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
    sf = cfg.scale
    if cfg.bicubic_prob and rng.random() < cfg.bicubic_prob:
        return bicubic_downsample(hr, sf)
    kernel1 = random_blur_kernel(rng, cfg, 1)
    kernel2 = random_blur_kernel(rng, cfg, 2)
    sinc = final_sinc_kernel(rng, cfg)
    # stage 1
    img = _filter(hr.astype(np.float32), kernel1)
    img = _resize(img, _mode(rng), scale=_resize_scale(rng, cfg.resize_prob, cfg.resize_range))
    img = _add_noise(img, rng, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range, cfg.gray_noise_prob)
    img = _jpeg(img, rng, cfg.jpeg_range)
    # stage 2 (sizes relative to the final LR size)
    if rng.random() < cfg.second_order_prob:
        if rng.random() < cfg.second_blur_prob:
            img = _filter(img, kernel2)
        scale = _resize_scale(rng, cfg.resize_prob2, cfg.resize_range2)
        img = _resize(img, _mode(rng), size=(max(1, int(h / sf * scale)), max(1, int(w / sf * scale))))
        img = _add_noise(img, rng, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                         cfg.gray_noise_prob2)
    # final: [resize back + sinc] and JPEG, in random order
    if rng.random() < 0.5:
        img = _filter(_resize(img, _mode(rng), size=(h // sf, w // sf)), sinc)
        img = _jpeg(img, rng, cfg.jpeg_range2)
    else:
        img = _jpeg(img, rng, cfg.jpeg_range2)
        img = _filter(_resize(img, _mode(rng), size=(h // sf, w // sf)), sinc)
    return np.clip(np.round(img * 255.0) / 255.0, 0.0, 1.0).astype(np.float32)


def bicubic_downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    """Plain bicubic LR: torch's antialiased bicubic by ``scale`` (its kernel has a = -0.5, as PIL's; within one
    level of PIL), rounded to 8 bits, in [0, 1]."""
    h, w = hr.shape[:2]
    t = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))[None].float()
    lr = F.interpolate(t, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    lr = lr[0].numpy().transpose(1, 2, 0)
    return np.clip(np.round(lr * 255.0) / 255.0, 0.0, 1.0).astype(np.float32)
