"""Pixel maths of the LR -> SR path that must be identical everywhere: model range in and out, padding to
the model's input multiple, PyTorch-equivalent bicubic x4, crop.

numpy only and no rsd_deploy imports: the Triton Python models run in Triton's own interpreter, where
neither torch nor rsd_deploy may be installed, so ``rsd-export --triton`` copies this file verbatim
beside their model.py (tests/export/test_triton_repository.py checks the copy is byte-identical).
Everything else (rsd-upscale, rsd-bench quality, training validation, rsd-eval) reaches it through
``rsd_deploy.pipeline.image_io`` (torch tensors) and ``rsd_deploy.metrics`` (8-bit rounding).
"""
import numpy as np

_MAX_VALUE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


def max_value(dtype) -> int:
    """255 for uint8, 65535 for uint16 (the pixel types the pipeline reads and writes)."""
    return _MAX_VALUE[np.dtype(dtype)]


def to_model_range(pixels: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [-1, 1] as upstream: ``(x / max - 0.5) / 0.5``; float32 passes through."""
    if pixels.dtype == np.float32:
        return np.ascontiguousarray(pixels)  # torch.from_numpy rejects negative strides
    unit = pixels.astype(np.float32) / np.float32(_MAX_VALUE[pixels.dtype])
    return (unit - np.float32(0.5)) / np.float32(0.5)


def quantize(image: np.ndarray, max_value: int = 255, dtype=np.uint8, inplace: bool = False) -> np.ndarray:
    """Model range -> integers: clamp to [-1, 1], ``rint((x * 0.5 + 0.5) * max_value)`` in float32 (half to
    even). ``inplace``: a float32 ``image`` is used as scratch space (large SR images)."""
    x = image if inplace and image.dtype == np.float32 else np.array(image, dtype=np.float32)
    np.clip(x, -1.0, 1.0, out=x)
    x *= np.float32(0.5)
    x += np.float32(0.5)
    x *= np.float32(max_value)
    return np.rint(x, out=x).astype(dtype)


def pad_to_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """Pad the last two axes (..., h, w) at the bottom and right to multiples of ``multiple``.

    Reflect (the official choice) per axis where it is defined (pad < side); replicate where it is
    not (e.g. a 7-px side padded to 16), so every size works. Width first, then height.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    lead = [(0, 0)] * (x.ndim - 2)
    if pad_w:
        x = np.pad(x, lead + [(0, 0), (0, pad_w)], mode="reflect" if pad_w < w else "edge")
    if pad_h:
        x = np.pad(x, lead + [(0, pad_h), (0, 0)], mode="reflect" if pad_h < h else "edge")
    return x


def crop(sr: np.ndarray, height: int, width: int, scale: int = 4) -> np.ndarray:
    """The SR of an unpadded (height, width) LR: the top-left (scale*height, scale*width) of (..., H, W)."""
    return sr[..., :scale * height, :scale * width]


def _cubic_matrix(in_size: int, factor: int, a: float) -> np.ndarray:
    """(in*factor, in) float32 interpolation matrix of PyTorch's bicubic upsampling along one axis
    (align_corners=False, borders clamped to the edge sample, as aten's upsample_bicubic2d)."""
    out_size = in_size * factor
    dst = np.arange(out_size, dtype=np.float32)
    real = np.float32(1.0 / factor) * (dst + np.float32(0.5)) - np.float32(0.5)  # no clamp for cubic
    i0 = np.floor(real)
    t = (real - i0).astype(np.float32)
    a32 = np.float32(a)

    def near(x):  # |x| <= 1
        return ((a32 + 2) * x - (a32 + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a32 * x - 5 * a32) * x + 8 * a32) * x - 4 * a32

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1).astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    for k in range(4):
        idx = np.clip(i0.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(matrix, (np.arange(out_size), idx), weights[:, k])
    return matrix


def bicubic_upsample(chw: np.ndarray, factor: int = 4, a: float = -0.75) -> np.ndarray:
    """(C, H, W) float32 -> (C, H*factor, W*factor): the numpy twin of image_io.bicubic_x4 (PyTorch bicubic,
    a = -0.75, align_corners=False, no antialias, no clamp); equal to it to float32 rounding."""
    _, h, w = chw.shape
    my, mx = _cubic_matrix(h, factor, a), _cubic_matrix(w, factor, a)
    return np.ascontiguousarray(np.einsum("oh,chw,pw->cop", my, chw.astype(np.float32), mx, optimize=True),
                                dtype=np.float32)
