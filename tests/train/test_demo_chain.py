"""The demo model's rebuild chain (vq -> teacher -> rsd -> package), run as CI runs it: tiny overrides."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "optim.iterations=3", "optim.batch_size=2", "optim.micro_batch=2", "data.gt_size=64", "val.every=0",
    "log.checkpoint_every=0", "rsd.fake_updates=1", "vq_train.quantize_from=1", "vq_train.kmeans_batches=2",
    "vq_train.model={ch: 32, ch_mult: [1, 1, 2], num_res_blocks: 1, n_embed: 128, norm_groups: 8}",
    "unet={image_size: 16, model_channels: 32, num_res_blocks: [1, 1], attention_resolutions: [8], "
    "channel_mult: [1, 1], num_head_channels: 16, swin_embed_dim: 32, mlp_ratio: 1.0, norm_groups: 8}",
]


def test_the_rebuild_chain_trains_packages_and_loads(tmp_path):
    if not (SHARED / "data" / "hr_photos").is_dir():
        pytest.skip("shared hr_photos absent")
    run, assets = tmp_path / "run", tmp_path / "assets"
    env = dict(os.environ, ASSETS=str(assets), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", str(REPO / "train/scripts/rebuild_demo_model.sh"), str(run), *TINY], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for stage, export in (("vq", "vq.safetensors"), ("teacher", "teacher_ema.safetensors"), ("rsd", "rsd_ema.safetensors")):
        assert (run / stage / export).is_file() and f"== {stage} took" in done.stdout
    import json

    import torch

    from rsd_deploy.checkpoint import load_checkpoint
    from rsd_deploy.models.schedule import Schedule
    from rsd_deploy.train.evaluate import super_resolve

    info = json.loads((assets / "demo_model.json").read_text())
    assert info["kind"] == "rsd" and info["bytes"] < 20 * 2 ** 20
    unet, vq = load_checkpoint(assets / info["unet"]), load_checkpoint(assets / info["vq"])
    assert unet.config.noise_channels == 1 and unet.config.norm_groups == 8 and vq.config.n_embed == 128
    sr = super_resolve(unet, vq, Schedule.preset("v1"), torch.zeros(1, 3, 16, 16), True, torch.Generator().manual_seed(0))
    assert sr.shape == (1, 3, 64, 64) and torch.isfinite(sr).all()
    # a second call resumes nothing and skips every finished stage
    again = subprocess.run(["bash", str(REPO / "train/scripts/rebuild_demo_model.sh"), str(run), *TINY], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("exists, skipped") == 3


def test_the_decoder_fine_tuning_config_freezes_the_demo_latents(tmp_path):
    """train/configs/demo_vq_decoder.yaml (measured in train/RESULTS.md, not shipped) is a decoder-only run
    on the stage-1 autoencoder, and a tiny run of it leaves the encoder and codebook bit-exact."""
    if not (SHARED / "data" / "hr_photos").is_dir():
        pytest.skip("shared hr_photos absent")
    import shutil

    import torch
    import yaml

    from rsd_deploy.checkpoint import load_checkpoint
    from rsd_deploy.train import load_config
    from rsd_deploy.train.loops import Trainer
    from tests.train.conftest import VQ

    written = yaml.safe_load((REPO / "train/configs/demo_vq_decoder.yaml").read_text())
    assert written["val"]["gt_dir"].endswith("runs/hr_photos_val_zoomed/gt")  # made by make_val_crops.py, not in git
    gt = tmp_path / "gt"
    gt.mkdir()
    shutil.copy(sorted((SHARED / "data" / "hr_photos").glob("*.jpg"))[0], gt)
    cfg = load_config(REPO / "train/configs/demo_vq_decoder.yaml",
                      [f"vq={VQ}", f"output_dir={tmp_path / 'dec'}", f"val.gt_dir={gt}", "optim.iterations=2",
                       "optim.batch_size=1", "optim.micro_batch=1", "optim.warmup=0", "data.gt_size=64", "val.every=0",
                       "log.checkpoint_every=0"])
    assert cfg.method.value == "vq" and cfg.vq_train.frozen_latents
    before = load_checkpoint(VQ).state_dict()
    after = load_checkpoint(Trainer(cfg).run()).state_dict()
    assert all(torch.equal(after[k].float(), v.float()) for k, v in before.items()
               if k.startswith(("encoder.", "quant_conv.", "quantize.")))
