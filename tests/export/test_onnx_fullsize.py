"""Full-size architecture (random weights): all three graphs export, stay shape-generic and match
PyTorch through ONNX Runtime. Slow (~10-25 min on 2 CPU cores); numbers from one run are recorded
in benchmarks/results/export_fullsize_cpu.md (benchmarks/export_fullsize.py)."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.config import UNetConfig, VQConfig
from rsd_deploy.export.exporter import ExportConfig, export_models
from rsd_deploy.models import UNetSwin, VQAutoencoder
from tests.conftest import DATA

pytestmark = pytest.mark.slow


def test_fullsize_rsd_exports_and_matches_pytorch(tmp_path):
    if not (DATA / "imagenet_val_sr" / "lq").is_dir():
        pytest.skip("shared data is absent")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    unet = UNetSwin(UNetConfig.full(noise_channels=1)).eval()
    vq = VQAutoencoder(VQConfig.full()).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "relative_position_bias_table" in name:  # zero at init: give the bias path values
                p.normal_(0.0, 0.02)
    result = export_models(ExportConfig(out_dir=tmp_path / "full", unet=unet, vq_model=vq, model="rsd",
                                        demo=True, accuracy_count=1))
    shapes = {r.shape for r in result.parity}
    assert shapes == {(1, 64, 64), (1, 64, 128), (2, 128, 64)}
    assert all(r.max_abs <= r.atol for r in result.parity)
    assert result.accuracy.end_to_end_of("fp32").min_psnr_db >= 60.0
    # the ~475 MB UNet keeps its weights in external data beside the graph
    assert (tmp_path / "full" / "denoiser.onnx.data").is_file()
    assert result.bytes["denoiser"]["fp32"] > 400e6
