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


def test_lpips_loads_local_weights_and_refuses_missing(tmp_path):
    from rsd_deploy.errors import CheckpointError
    from rsd_deploy.train.lpips import LPIPS, load_lpips

    with pytest.raises(CheckpointError, match="lpips.required=false"):
        load_lpips(str(tmp_path / "absent.pth"), required=True)
    assert load_lpips(None, required=False) is None
    # a file in the documented layout (torchvision VGG keys + lpips lin<k>.model.1 keys) loads
    torch.manual_seed(0)
    ref = LPIPS()
    state = {k: v for k, v in ref.state_dict().items() if k.startswith("features.")}
    state.update({f"lin{k}.model.1.weight": ref.lins[k].weight.abs() for k in range(5)})
    torch.save(state, tmp_path / "lpips.pth")
    model = load_lpips(str(tmp_path / "lpips.pth"), required=True)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    d_same, d_diff = model(a, a), model(a, b)
    assert torch.all(d_same.abs() < 1e-6) and torch.all(d_diff > 0)
    del state["lin4.model.1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="lack 1 tensors"):
        load_lpips(str(tmp_path / "partial.pth"), required=True)
