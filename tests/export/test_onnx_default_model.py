"""`rsd-export` with no checkpoint exports the embedded demo model (skips while it is not installed)."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from rsd_deploy.errors import CheckpointError
from rsd_deploy.export.exporter import ExportConfig, export_models
from tests.conftest import DATA


def test_embedded_model_exports_and_matches_pytorch(tmp_path, caplog):
    from rsd_deploy.default_model import load_default_models

    try:
        unet, _, info = load_default_models()
    except CheckpointError:
        pytest.skip("the embedded demo model is not installed in this checkout")
    if not (DATA / "imagenet_val_sr" / "lq").is_dir():
        pytest.skip("shared data is absent")
    m = int(unet.config.input_multiple)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level(logging.WARNING, logger="rsd_deploy.export.exporter"):
            result = export_models(ExportConfig(out_dir=tmp_path / "demo", opt_shape=(1, m, m), accuracy_count=2))
    finally:
        torch.set_num_threads(old)
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["model"]["demo"] is True and manifest["model"]["unet_checkpoint"] is None
    assert manifest["model"]["kind"] == info["kind"]
    assert len({r.shape for r in result.parity}) == 3 and all(r.max_abs <= r.atol for r in result.parity)
    assert result.accuracy.end_to_end_of("fp32").min_psnr_db >= 60.0
    if info["kind"].startswith("resshift"):  # a teacher exports its last step only, and says so
        assert "runs only its last step" in caplog.text
