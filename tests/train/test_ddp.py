"""A 2-process gloo DDP run under torchrun (CPU)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.train.conftest import TEACHER, VQ

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_process_gloo(tmp_path, hr_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "rsd_deploy.cli.train", "--config", str(REPO / "train/configs/tiny_rsd.yaml"),
           f"teacher={TEACHER}", f"vq={VQ}", f"data.hr_dirs=[{hr_dir}]", f"output_dir={tmp_path}",
           "device=cpu", "optim.iterations=2", "optim.batch_size=4", "optim.micro_batch=1", "rsd.fake_updates=1",
           "val.every=0", "log.sample_every=0", "log.checkpoint_every=1", "log.tensorboard=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "rsd_ema.safetensors").is_file()
    import torch

    state = torch.load(tmp_path / "checkpoints" / "step_0000002.pt", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 2
    from rsd_deploy import load_checkpoint

    assert load_checkpoint(tmp_path / "rsd_ema.safetensors").config.noise_channels == 1
