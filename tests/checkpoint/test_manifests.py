"""Full-size models built from the official configs match the official state-dict manifests key for key."""
import json

import pytest
import torch

from rsd_deploy import UNetConfig, VQConfig
from rsd_deploy.checkpoint import to_official_state_dict
from rsd_deploy.models import UNetSwin, VQAutoencoder
from tests.conftest import FIXTURES


def manifest(name):
    path = FIXTURES / "manifests" / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name,noise", [("manifest_unet_v1.json", 0), ("manifest_unet_v3.json", 0),
                                        ("manifest_rsd_student_v1.json", 1)])
def test_unet_matches_manifest(name, noise):
    m = manifest(name)
    with torch.device("meta"):
        model = UNetSwin(UNetConfig.full(noise_channels=noise))
    ours = {k: v for k, v in model.state_dict().items()}
    official = m["state_dict"]
    params = {k: v for k, v in official.items() if not k.endswith(("attn_mask", "relative_position_index"))}
    assert list(ours) == list(params)  # same keys in the same order
    for k, v in params.items():
        assert list(ours[k].shape) == v["shape"], k
    assert sum(p.numel() for p in model.parameters()) == m["num_parameters"]
    # with the regenerated buffers we produce exactly the official key set, shapes and dtypes
    full = to_official_state_dict(UNetSwin(UNetConfig(num_res_blocks=(2, 2, 2, 2), model_channels=32,
                                                      swin_embed_dim=32, num_head_channels=16)))
    assert len(full) == len(official)  # same key count (564) whatever the widths
    buffers = {k: v for k, v in official.items() if k not in params}
    for k, v in buffers.items():
        assert list(full[k].shape) == v["shape"] and str(full[k].dtype) == f"torch.{v['dtype']}", k
    assert sum(v.numel() for k, v in full.items() if k in buffers) == m["num_buffer_elements"]
    assert len(official) == m["num_state_dict_keys"]


def test_vq_matches_manifest():
    m = manifest("manifest_autoencoder_vqf4.json")
    with torch.device("meta"):
        model = VQAutoencoder(VQConfig.full())
    ours = model.state_dict()
    assert sorted(ours) == sorted(m["state_dict"])
    for k, v in m["state_dict"].items():
        assert list(ours[k].shape) == v["shape"], k
    assert sum(p.numel() for p in model.parameters()) == m["num_parameters"]
