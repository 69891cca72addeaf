"""rsd_deploy.pixels: the one pad / bicubic / crop / rounding of the LR -> SR path, against PyTorch and the writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsd_deploy import metrics, pixels
from rsd_deploy.pipeline.image_io import LRImage, SRCanvas, bicubic_x4, pad_to_multiple


@pytest.mark.parametrize("h, w", [(1, 1), (7, 13), (16, 16), (33, 17), (5, 40)])
def test_pad_reflects_per_axis_where_defined_else_replicates(h, w):
    x = np.random.default_rng(h * w).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    y = pixels.pad_to_multiple(x, 16)
    assert y.shape[-2] % 16 == 0 and y.shape[-1] % 16 == 0
    np.testing.assert_array_equal(y[..., :h, :w], x)
    t = torch.from_numpy(x)
    pw, ph = (-w) % 16, (-h) % 16  # the rule in PyTorch terms, axis by axis
    if pw:
        t = F.pad(t, (0, pw, 0, 0), mode="reflect" if pw < w else "replicate")
    if ph:
        t = F.pad(t, (0, 0, 0, ph), mode="reflect" if ph < h else "replicate")
    np.testing.assert_array_equal(y, t.numpy())
    np.testing.assert_array_equal(pad_to_multiple(torch.from_numpy(x), 16).numpy(), y)  # image_io's torch face
    assert pixels.crop(np.zeros((3, 4 * y.shape[-2], 4 * y.shape[-1])), h, w).shape == (3, 4 * h, 4 * w)


def test_numpy_bicubic_is_pytorchs():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 20, 12)).astype(np.float32)
    ref = bicubic_x4(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(pixels.bicubic_upsample(x, 4), ref, rtol=0, atol=3e-6)


def test_quantize_is_what_the_writer_and_metrics_round():
    rows = np.random.default_rng(1).uniform(-1.3, 1.3, (4, 8, 3)).astype(np.float32)
    canvas = SRCanvas(LRImage(Path("x.png"), np.zeros((1, 2, 3), np.uint8), None, False), 4)
    canvas.write_rows(0, rows.copy())
    np.testing.assert_array_equal(canvas.pixels[:, :, ::-1], metrics.to_uint8(rows))
    np.testing.assert_array_equal(pixels.quantize(rows), metrics.to_uint8(rows))
    u16 = (np.arange(12) * 5000).astype(np.uint16).reshape(2, 2, 3)
    np.testing.assert_array_equal(pixels.quantize(pixels.to_model_range(u16), 65535, np.uint16), u16)
