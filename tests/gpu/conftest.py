"""GPU test fixtures shared by tests/gpu modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_rsd, tiny_vq):
    """rsd-export of the tiny RSD student + VQ fixtures: fp32, fp16 and int8 graphs."""
    from rsd_deploy.export.exporter import ExportConfig, export_models

    out = tmp_path_factory.mktemp("tiny_export")
    export_models(ExportConfig(out_dir=out, unet=tiny_rsd, vq_model=tiny_vq, fp16=True, int8=True,
                               calib_count=4, accuracy_count=1))
    return out
