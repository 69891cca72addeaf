"""``norm_groups``: the official nets keep 32 GroupNorm groups; narrow nets can use fewer, and the
choice travels with the weights."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.config import UNetConfig, VQConfig
from rsd_deploy.models.unet import UNetSwin
from rsd_deploy.models.vq import VQAutoencoder


def _groups(model: torch.nn.Module) -> set:
    return {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}


def test_official_configs_keep_32_groups():
    assert UNetConfig().norm_groups == 32 and VQConfig().norm_groups == 32
    assert _groups(UNetSwin(UNetConfig.tiny())) == {32}
    assert _groups(VQAutoencoder(VQConfig.tiny())) == {32}


def test_fewer_groups_reach_every_norm_and_survive_saving(tmp_path):
    from rsd_deploy.checkpoint import load_checkpoint, save_safetensors

    unet = UNetSwin(UNetConfig(**{**UNetConfig.tiny().to_dict(), "norm_groups": 8}))
    vq = VQAutoencoder(VQConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, n_embed=64, norm_groups=8))
    assert _groups(unet) == {8} and _groups(vq) == {8}
    for model, name in ((unet, "u.safetensors"), (vq, "v.safetensors")):
        loaded = load_checkpoint(save_safetensors(model, tmp_path / name))
        assert loaded.config == model.config and _groups(loaded) == {8}
    # the state dict does not depend on the groups: the official key set and shapes are unchanged
    official = UNetSwin(UNetConfig.tiny()).state_dict()
    assert {k: v.shape for k, v in official.items()} == {k: v.shape for k, v in unet.state_dict().items()}


def test_width_not_divisible_by_the_groups_is_refused():
    with pytest.raises(ValueError, match="norm_groups=8"):
        VQConfig(ch=36, ch_mult=(1, 2), norm_groups=8)
    with pytest.raises(ValueError, match="multiple of norm_groups=32"):
        UNetConfig(model_channels=48)
