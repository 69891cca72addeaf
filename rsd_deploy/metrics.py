"""Image quality metrics: one implementation for the benchmark, training validation, rsd-eval and the
export parity reports (numpy only, no torch import, so any caller and any runtime can use it).

Protocol (shared/docs/PUBLISHED_NUMBERS.md section 5: the papers evaluate with pyiqa, whose PSNR/SSIM
``test_y_channel`` follow BasicSR):

* SR images are written as 8-bit: :func:`to_uint8` clamps to [-1, 1] and rounds half to even,
  ``rint((x * 0.5 + 0.5) * 255)`` in float32, exactly what ``rsd-upscale`` writes (image_io.SRCanvas)
  and the Triton post-process return.
* Y is ITU-R BT.601 luma of 8-bit RGB in [16, 235] (MATLAB ``rgb2ycbcr``), not rounded; computed in
  float64 here (BasicSR/pyiqa use float32: differences are ~1e-5 of a grey level).
* PSNR over all pixels (and channels), no border crop; inf for identical images.
* SSIM: Wang et al. 2004 with an 11 x 11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population
  statistics, mean over the valid region (no padding), channels averaged. This equals BasicSR's
  ``calculate_ssim`` and scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` (tests/test_metrics.py checks it on real images).
* Colour error (issue 12's "mean colour shift"): mean over R, G, B of |channel mean of SR - channel mean
  of the reference|, in 8-bit levels; a global tint or a washed-out image shows here, noise does not.
* Detail ratio: mean gradient magnitude of the SR's Y over the reference's; gradients are forward
  differences (``Y[:, 1:] - Y[:, :-1]`` and ``Y[1:] - Y[:-1]``, both cropped to (H-1, W-1)), magnitude
  ``sqrt(gx^2 + gy^2)``. Below 1: blurrier than the reference; well above 1: invented texture or noise.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from rsd_deploy import pixels
from rsd_deploy.errors import ShapeError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
#: BT.601 luma weights for RGB on the 0..255 scale (MATLAB rgb2ycbcr, BasicSR, pyiqa)
Y_WEIGHTS = (65.481, 128.553, 24.966)

METRIC_NOTE = ("PSNR/SSIM on 8-bit images without border crop, Y = BT.601 luma (16..235, BasicSR/pyiqa "
               "test_y_channel) and RGB; SSIM: 11x11 Gaussian window, sigma 1.5 (rsd_deploy.metrics)")


def as_numpy(image: Any) -> np.ndarray:
    """A numpy view of ``image`` (numpy array, or a torch tensor on any device)."""
    if hasattr(image, "detach"):  # torch.Tensor, without importing torch here
        return image.detach().cpu().numpy()
    return np.asarray(image)


def quantize(image: Any, max_value: int = 255, dtype: Any = np.uint8) -> np.ndarray:
    """Model-range image in about [-1, 1] -> integers 0..max_value: clamp, ``rint((x*0.5+0.5)*max)``
    in float32 (half to even), the one rounding (``rsd_deploy.pixels.quantize``). Any layout."""
    return pixels.quantize(as_numpy(image), max_value, dtype)


def to_uint8(image: Any) -> np.ndarray:
    """Model-range image -> uint8 as rsd-upscale writes it (see :func:`quantize`)."""
    return quantize(image, 255, np.uint8)


def rgb_to_y(rgb: Any, channel_axis: int = -1) -> np.ndarray:
    """BT.601 luma in [16, 235] (float64) of RGB on the 0..255 scale; the channel axis is removed."""
    x = np.moveaxis(as_numpy(rgb).astype(np.float64), channel_axis, -1)
    if x.shape[-1] != 3:
        raise ShapeError(f"rgb_to_y needs 3 channels on axis {channel_axis}; got shape {x.shape}")
    r, g, b = Y_WEIGHTS
    return 16.0 + (r * x[..., 0] + g * x[..., 1] + b * x[..., 2]) / 255.0


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{what} of differently shaped images {a.shape} vs {b.shape}; compare images of one size")


def psnr(a: Any, b: Any, data_range: float = 255.0) -> float:
    """10 log10(data_range^2 / MSE) over every element, float64; inf when identical."""
    x, y = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    _same_shape(x, y, "PSNR")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(data_range ** 2 / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps (float64); the 2-D SSIM window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of the last two axes of (..., H, W) (no padding)."""
    k = len(taps)
    h, w = x.shape[-2:]
    rows = sum(taps[i] * x[..., i:h - k + 1 + i, :] for i in range(k))
    return sum(taps[i] * rows[..., :, i:w - k + 1 + i] for i in range(k))


def ssim(a: Any, b: Any, data_range: float = 255.0, channel_axis: Optional[int] = None) -> float:
    """Mean SSIM of two (H, W) images, or (H, W, C)-like images with ``channel_axis`` (channels averaged).

    ``channel_axis`` None: a 3-D input is taken as (H, W, C) (as scikit-image's channel_axis=-1).
    """
    x, y = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    _same_shape(x, y, "SSIM")
    if x.ndim == 3:
        axis = -1 if channel_axis is None else channel_axis
        x, y = np.moveaxis(x, axis, 0), np.moveaxis(y, axis, 0)  # (C, H, W)
    elif x.ndim != 2:
        raise ShapeError(f"SSIM takes (H, W) or (H, W, C) images; got shape {x.shape}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ShapeError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} px; got {x.shape[-2:]}")
    taps = gaussian_window()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x * mu_x
    var_y = _filter_valid(y * y, taps) - mu_y * mu_y
    cov = _filter_valid(x * y, taps) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


def _rgb8_pair(sr: Any, ref: Any, what: str) -> tuple:
    x, y = as_numpy(sr), as_numpy(ref)
    _same_shape(x, y, what)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ShapeError(f"{what} takes (H, W, 3) RGB images; got shape {x.shape}")
    return x.astype(np.float64), y.astype(np.float64)


def colour_error(sr: Any, ref: Any) -> float:
    """Mean over R, G, B of |mean of the channel in ``sr`` - mean in ``ref``| of two (H, W, 3) 8-bit images,
    in 8-bit levels (0 for identical colour balance)."""
    x, y = _rgb8_pair(sr, ref, "colour error")
    return float(np.mean(np.abs(x.mean(axis=(0, 1)) - y.mean(axis=(0, 1)))))


def mean_gradient(y: Any) -> float:
    """Mean forward-difference gradient magnitude of an (H, W) image (H, W >= 2), float64."""
    x = as_numpy(y).astype(np.float64)
    if x.ndim != 2 or min(x.shape) < 2:
        raise ShapeError(f"mean gradient takes an (H, W) image of at least 2x2 px; got shape {x.shape}")
    gx = x[:-1, 1:] - x[:-1, :-1]
    gy = x[1:, :-1] - x[:-1, :-1]
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


def detail_ratio(sr: Any, ref: Any) -> float:
    """Mean gradient magnitude of ``sr``'s Y / that of ``ref``'s Y (two (H, W, 3) 8-bit RGB images):
    1.0 = as much detail as the reference, 0 = flat."""
    x, y = _rgb8_pair(sr, ref, "detail ratio")
    denominator = mean_gradient(rgb_to_y(y))
    if denominator == 0.0:
        raise ShapeError("detail ratio: the reference image is flat (no gradient); compare against an image "
                         "with detail")
    return mean_gradient(rgb_to_y(x)) / denominator


def sr_metrics(sr: Any, hr: Any) -> Dict[str, float]:
    """PSNR/SSIM on Y and on RGB of two (H, W, 3) 8-bit RGB images (SR vs HR)."""
    sr_, hr_ = as_numpy(sr), as_numpy(hr)
    _same_shape(sr_, hr_, "SR metrics")
    ys, yh = rgb_to_y(sr_), rgb_to_y(hr_)
    return {"psnr_y": psnr(ys, yh), "ssim_y": ssim(ys, yh),
            "psnr_rgb": psnr(sr_, hr_), "ssim_rgb": ssim(sr_, hr_, channel_axis=-1)}


__all__ = ["to_uint8", "quantize", "rgb_to_y", "psnr", "ssim", "sr_metrics", "gaussian_window", "as_numpy",
           "colour_error", "mean_gradient", "detail_ratio", "METRIC_NOTE"]
