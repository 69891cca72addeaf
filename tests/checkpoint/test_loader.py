"""load_checkpoint on official-format files, wrappers, safetensors round trips and every error path."""
import json
import subprocess
import sys

import pytest
import torch

from rsd_deploy import UNetConfig, VQConfig, load_checkpoint, save_safetensors
from rsd_deploy.checkpoint import keymap
from rsd_deploy.checkpoint.detect import infer_unet_config, infer_vq_config
from rsd_deploy.errors import CheckpointError, KeyMappingError
from rsd_deploy.models import UNetSwin, VQAutoencoder
from tests.conftest import FIXTURES


def official(name):
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


def test_official_tiny_files_are_recognised():
    unet = load_checkpoint(official("unet_tiny/state_dict.pth"))
    assert isinstance(unet, UNetSwin) and not unet.training
    assert unet.config == UNetConfig.tiny()
    rsd = load_checkpoint(official("rsd_student_tiny/state_dict.pth"))
    assert rsd.config == UNetConfig.tiny(noise_channels=1)
    assert "RSD student" in rsd.checkpoint_info["role"]
    vq = load_checkpoint(official("vq_tiny/state_dict.pth"))
    assert isinstance(vq, VQAutoencoder) and vq.config == VQConfig.tiny()


def test_ddp_wrapped_file_loads_to_identical_weights():
    plain = load_checkpoint(official("rsd_student_tiny/state_dict.pth"))
    wrapped = load_checkpoint(official("rsd_student_tiny/state_dict_wrapped.pth"))
    assert wrapped.checkpoint_info["wrappers"] == ["state_dict"]
    for (k, a), (k2, b) in zip(plain.state_dict().items(), wrapped.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_unwrap_and_prefixes_in_any_combination():
    t = torch.zeros(2)
    for obj in ({"params_ema": {"_orig_mod.module.a": t}, "params": {"a": t + 1}},
                {"ema": {"module._orig_mod.a": t}}, {"state_dict": {"a": t}, "step": 5}, {"a": t, "epoch": 3}):
        state, _ = keymap.unwrap(obj)
        assert list(keymap.strip_prefixes(state)) == ["a"]
        assert torch.equal(keymap.strip_prefixes(state)["a"], t)
    with pytest.raises(CheckpointError, match="no state dict"):
        keymap.unwrap({"x": 1})


def test_safetensors_round_trip_keeps_config_and_outputs(tmp_path, tiny_rsd):
    path = save_safetensors(tiny_rsd, tmp_path / "student.safetensors", {"note": "test"})
    again = load_checkpoint(path)
    assert again.config == tiny_rsd.config
    assert again.checkpoint_info["metadata"]["note"] == "test"
    x = torch.randn(1, 3, 16, 16)
    n = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x, torch.tensor([14]), x, n), tiny_rsd(x, torch.tensor([14]), x, n))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_architecture_inferred_from_shapes_alone():
    # full-size configs from their state-dict shapes (meta tensors: no memory)
    with torch.device("meta"):
        for cfg in (UNetConfig.full(), UNetConfig.full(noise_channels=1), UNetConfig.tiny()):
            inferred = infer_unet_config(UNetSwin(cfg).state_dict())
            assert inferred == cfg
        for cfg in (VQConfig.full(), VQConfig.tiny()):
            assert infer_vq_config(VQAutoencoder(cfg).state_dict()) == cfg


def test_wrong_files_get_one_clear_error(tmp_path):
    good = torch.load(official("unet_tiny/state_dict.pth"), weights_only=True)
    cases = {}
    missing = dict(good)
    missing.pop("out.2.bias")
    cases["missing"] = (missing, KeyMappingError, "1 missing: out.2.bias")
    extra = dict(good, **{"input_blocks.1.0.surprise": torch.zeros(1)})
    cases["unexpected"] = (extra, KeyMappingError, "1 unexpected: input_blocks.1.0.surprise")
    bad_shape = dict(good, **{"input_blocks.1.0.out_layers.3.weight": torch.zeros(32, 32, 1, 1)})
    cases["shape"] = (bad_shape, KeyMappingError, "shape mismatch: input_blocks.1.0.out_layers.3.weight")
    bad_mask = dict(good, **{"input_blocks.1.1.blocks.1.attn_mask": torch.zeros(4, 64, 64)})
    cases["mask"] = (bad_mask, KeyMappingError, "not the official shifted-window mask")
    cases["foreign"] = ({"fc.weight": torch.zeros(2, 2)}, CheckpointError, "not a ResShift/SinSR/RSD UNet")
    for name, (state, err, msg) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        with pytest.raises(err) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert msg in text and str(path) in text and "\n" not in text, name


class _Custom:
    """A class a pickle would have to import: weights_only loading must refuse it."""


def test_unreadable_and_unsafe_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="a text file, not a checkpoint"):
        load_checkpoint(corrupt)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(bad_st)
    pickled = tmp_path / "code.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "obj": _Custom()}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(pickled)


def test_inspect_cli_describes_and_fails_cleanly(tmp_path):
    path = official("rsd_student_tiny/state_dict_wrapped.pth")
    out = subprocess.run([sys.executable, "-m", "rsd_deploy.cli.inspect", str(path), "--json"],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["kind"] == "unet" and info["config"]["noise_channels"] == 1 and info["wrappers"] == ["state_dict"]
    bad = subprocess.run([sys.executable, "-m", "rsd_deploy.cli.inspect", str(tmp_path / "x.pth")],
                         capture_output=True, text=True)
    assert bad.returncode == CheckpointError.exit_code
    assert bad.stderr.strip().count("\n") == 0 and "no such checkpoint" in bad.stderr
