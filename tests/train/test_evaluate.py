"""LPIPS for validation (PSNR/SSIM/Y: tests/test_metrics.py, the one rsd_deploy.metrics)."""
from __future__ import annotations

import pytest
import torch


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
