"""GPU: the torch backend and the SR pipeline on CUDA (fp32/fp16/bf16) against the CPU fp32 run.

The noise is drawn on the CPU from (seed, position), so CPU and CUDA runs see identical noise and
differ only by kernels and precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rsd_deploy.backends.torch_backend import TorchBackend, TorchOptions
from rsd_deploy.models import Schedule
from rsd_deploy.pipeline import ModelInfo, ModelKind, SRPipeline, TileConfig
from tests.pipeline.helpers import random_rgb

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision, mean_tol", [("fp32", 1e-3), ("bf16", 0.05), ("fp16", 0.02)])
def test_cuda_pipeline_matches_cpu_fp32(tiny_rsd, tiny_vq, precision, mean_tol):
    sched = Schedule.preset("v1")
    info = ModelInfo(ModelKind.RSD, sched, 16, 1)
    lr = random_rgb(40, 56, seed=7)
    tiling = TileConfig(32, 8, batch=2)
    cpu = SRPipeline(TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched)), info, tiling, seed=3).upscale_array(lr)
    gpu_backend = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched, device="cuda", precision=precision))
    gpu = SRPipeline(gpu_backend, info, tiling, seed=3).upscale_array(lr)
    tiny_rsd.cpu(), tiny_vq.cpu()  # the session fixtures are shared with CPU tests
    assert gpu.shape == cpu.shape == (160, 224, 3) and np.isfinite(gpu).all()
    # VQ argmin near-ties can flip a few codes, so compare the mean, not the max
    assert np.abs(gpu - cpu).mean() < mean_tol


def test_cuda_backend_returns_float32_on_the_device(tiny_rsd, tiny_vq):
    sched = Schedule.preset("v1")
    backend = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched, device="cuda", precision="fp16"))
    z = backend.encode(torch.zeros(1, 3, 64, 64))
    x0 = backend.denoise(z, 14, torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))
    img = backend.decode(x0)
    tiny_rsd.cpu(), tiny_vq.cpu()
    assert z.device.type == x0.device.type == img.device.type == "cuda"
    assert z.dtype == x0.dtype == img.dtype == torch.float32
