"""Issue 14: files that are not (good) checkpoints get one line saying what they are and what to do.

Never torch's advice to retry with weights_only=False; NaN/Inf and non-float weights are refused at load
(naming the tensors); a wrong out.2.weight is blamed on out.2.weight; rsd-inspect goes on past a bad file.
"""
import io

import cv2
import numpy as np
import pytest
import torch

from rsd_deploy import load_checkpoint, save_safetensors
from rsd_deploy.cli.common import run_command
from rsd_deploy.cli.inspect import cli as inspect_cli
from rsd_deploy.errors import CheckpointError
from tests.conftest import FIXTURES

UNET = FIXTURES / "unet_tiny" / "state_dict.pth"
VQ = FIXTURES / "vq_tiny" / "state_dict.pth"
pytestmark = pytest.mark.skipif(not (UNET.is_file() and VQ.is_file()), reason="shared/fixtures is absent")


def _torch_zip_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(256)}, buf)
    return buf.getvalue()


BAD_FILES = {
    "html": (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>login</body></html>\n",
             "an HTML page, not weights: the download failed?"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 123456789\n",
            "a Git LFS pointer, not the weights: run `git lfs pull`"),
    "png": (cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), "a PNG image, not a checkpoint"),
    "jpeg": (cv2.imencode(".jpg", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), "a JPEG image, not a checkpoint"),
    "random": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a checkpoint"),
    "random-pickle-start": (b"\x80" + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                            "cannot be read as a PyTorch checkpoint"),
    "truncated-zip": (_torch_zip_bytes()[:600], "a truncated or damaged zip archive"),
    "empty": (b"", "the file is empty (0 bytes)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, name):
    data, words = BAD_FILES[name]
    path = tmp_path / f"{name}.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and words in text and "\n" not in text, text
    assert "weights_only=False" not in text and "trust" not in text.lower()
    assert path.read_bytes() == data


def test_inspect_goes_on_past_bad_files_and_fails_at_the_end(tmp_path, capsys):
    html = tmp_path / "page.pth"
    html.write_bytes(BAD_FILES["html"][0])
    nan = tmp_path / "nan.pth"
    state = torch.load(UNET, weights_only=True)
    w = state["input_blocks.0.0.weight"].clone()
    w[0, 0, 0, 0] = float("nan")
    torch.save(dict(state, **{"input_blocks.0.0.weight": w}), nan)
    before = {p: p.read_bytes() for p in (html, nan)}

    code = run_command(inspect_cli, [str(UNET), str(html), str(nan), str(VQ)])
    out, err = capsys.readouterr()
    assert code == CheckpointError.exit_code
    assert f"{UNET}: ResShift / SinSR UNet" in out and f"{VQ}: VQ-f4 autoencoder" in out  # both good files described
    lines = err.strip().splitlines()
    assert lines[0] == f"error: {html}: " + "an HTML page, not weights: the download failed? (a login, error or " \
                                            "redirect page); download it again"
    assert lines[1].startswith(f"error: {nan}: 1 tensor(s) hold NaN/Inf: input_blocks.0.0.weight (1 NaN)")
    assert lines[2] == "error: 2 of 4 checkpoints could not be inspected (see above)" and len(lines) == 3
    assert "Traceback" not in err and {p: p.read_bytes() for p in (html, nan)} == before


@pytest.mark.parametrize("fixture, key, value, words", [
    (UNET, "input_blocks.0.0.weight", float("nan"), "input_blocks.0.0.weight (1 NaN)"),
    (UNET, "out.2.bias", float("inf"), "out.2.bias (1 Inf)"),
    (VQ, "quantize.embedding.weight", float("nan"), "quantize.embedding.weight (1 NaN)"),
])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path, fixture, key, value, words):
    state = torch.load(fixture, weights_only=True)
    t = state[key].clone()
    t.view(-1)[0] = value
    path = tmp_path / "bad.pth"
    torch.save(dict(state, **{key: t}), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text == f"{path}: 1 tensor(s) hold NaN/Inf: {words}; the weights are corrupt (a diverged training run " \
                   f"or a damaged file): use another checkpoint"


def test_wrong_out_weight_is_blamed_on_out_2_weight_not_the_first_conv(tmp_path):
    state = torch.load(UNET, weights_only=True)
    shape = tuple(state["out.2.weight"].shape)
    for bad in [torch.zeros(shape[0] + 1, *shape[1:]), torch.zeros(shape[0], 7, 3, 3), torch.zeros(12)]:
        path = tmp_path / "bad.pth"
        torch.save(dict(state, **{"out.2.weight": bad}), path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert f"shape mismatch: out.2.weight {tuple(bad.shape)} vs {shape}" in text, text
        assert "first conv" not in text and "input_blocks.0.0" not in text


def test_integer_weights_are_refused(tmp_path):
    state = torch.load(UNET, weights_only=True)
    path = tmp_path / "int32.pth"
    torch.save({k: v.to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}, path)
    with pytest.raises(CheckpointError, match=r"weight tensor\(s\) are not floating point \(time_embed.0.weight int32"):
        load_checkpoint(path)


def test_upper_case_safetensors_suffix_and_safetensors_named_pth_load(tmp_path):
    model = load_checkpoint(VQ)
    upper = save_safetensors(model, tmp_path / "vq.SAFETENSORS")
    assert torch.equal(load_checkpoint(upper).quantize.embedding.weight, model.quantize.embedding.weight)
    renamed = tmp_path / "vq_really_safetensors.pth"
    renamed.write_bytes(upper.read_bytes())
    assert torch.equal(load_checkpoint(renamed).quantize.embedding.weight, model.quantize.embedding.weight)
