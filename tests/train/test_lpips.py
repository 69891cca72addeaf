"""LPIPS parity: our module against the LPIPS v0.1 definition (lpips package layout), AlexNet and VGG.

Two references on the same random backbone weights:
* always: a functional re-statement of the ``lpips`` package's forward (``lpips.LPIPS(net, version
  '0.1', lpips=True, spatial=False)``: ScalingLayer constants, per-channel unit normalisation with
  eps 1e-10, squared difference, 1x1 linear heads, spatial mean, sum over the five taps), fed a
  state dict in the package's own key layout (``net.slice<k>.<i>.*``, ``lin<k>.model.1.weight``);
* when the ``lpips`` package and a torchvision matching our torch are importable: the package
  itself (``pnet_rand=True``: random backbone; its bundled v0.1 linear heads). They are not in the
  dev extra: PyPI's torchvision for torch 2.13 is CUDA-linked and does not import with the CPU
  torch CI pins, so that test skips there with the reason.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsd_deploy.train.lpips import LPIPS

ALEX = [(0, 11, 4, 2, 64, 3), "M", (3, 5, 1, 2, 192, 64), "M", (6, 3, 1, 1, 384, 192), (8, 3, 1, 1, 256, 384),
        (10, 3, 1, 1, 256, 256)]
ALEX_TAPS = {0, 3, 6, 8, 10}
ALEX_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def _vgg_spec():
    spec, taps, slices = [], set(), {}
    index, cin, piece = 0, 3, 1
    for block, (n, c) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))):
        if block:
            spec.append("M")
            index += 1
        for _ in range(n):
            spec.append((index, 3, 1, 1, c, cin))
            slices[index] = piece
            cin, index = c, index + 2
        taps.add(index - 2)
        piece += 1
    return spec, taps, slices


def _random_lpips_package_state(net: str, seed: int):
    """A state dict as ``lpips.LPIPS(net=...).state_dict()`` names it, random but LPIPS-like (heads >= 0)."""
    g = torch.Generator().manual_seed(seed)
    spec, taps, slices = (ALEX, ALEX_TAPS, ALEX_SLICES) if net == "alex" else _vgg_spec()
    state, channels = {}, []
    for item in spec:
        if item == "M":
            continue
        i, k, _, _, cout, cin = item
        state[f"net.slice{slices[i]}.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        state[f"net.slice{slices[i]}.{i}.bias"] = torch.randn(cout, generator=g) * 0.1
        if i in taps:
            channels.append(cout)
    for j, c in enumerate(channels):
        state[f"lin{j}.model.1.weight"] = torch.rand(1, c, 1, 1, generator=g)
    return state, spec, taps


def _reference(state, spec, taps, x, y):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    weights = {int(k.split(".")[2]): v for k, v in state.items() if k.startswith("net.") and k.endswith("weight")}
    biases = {int(k.split(".")[2]): v for k, v in state.items() if k.startswith("net.") and k.endswith("bias")}
    pool = (3, 2) if spec is ALEX else (2, 2)

    def feats(z):
        z, out = (z - shift) / scale, []
        for item in spec:
            if item == "M":
                z = F.max_pool2d(z, *pool)
                continue
            i, _, stride, pad = item[:4]
            z = F.relu(F.conv2d(z, weights[i], biases[i], stride=stride, padding=pad))
            if i in taps:
                out.append(z)
        return out

    total = 0
    for j, (a, b) in enumerate(zip(feats(x), feats(y))):
        na = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
        nb = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((na - nb) ** 2, state[f"lin{j}.model.1.weight"]).mean([2, 3], keepdim=True)
    return total.view(-1)


def _pair(seed: int, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(3, 3, size, size, generator=g) * 2 - 1
    return a, (a + 0.4 * torch.randn(3, 3, size, size, generator=g)).clamp(-1, 1)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_v01_definition_on_random_backbones(net):
    state, spec, taps = _random_lpips_package_state(net, seed=3)
    ours = LPIPS(net)
    ours.load_weights(state, "lpips-package layout")
    x, y = _pair(1)
    ref = _reference(state, spec, taps, x, y)
    got = ours(x, y)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    assert torch.all(got > 0) and torch.all(ours(x, x).abs() < 1e-6)


def test_lpips_default_backbone_is_alexnet():
    assert LPIPS().net == "alex" and len(LPIPS().features) == 12  # torchvision alexnet().features up to relu5


def test_lpips_refuses_weights_of_the_other_backbone(tmp_path):
    from rsd_deploy.errors import CheckpointError
    from rsd_deploy.train.lpips import load_lpips

    state, _, _ = _random_lpips_package_state("vgg", seed=0)
    torch.save(state, tmp_path / "vgg.pth")
    with pytest.raises(CheckpointError, match="lpips.net") as info:
        load_lpips(str(tmp_path / "vgg.pth"), required=True, net="alex")
    assert "vgg.pth" in str(info.value) and "\n" not in str(info.value)
    assert load_lpips(str(tmp_path / "vgg.pth"), required=True, net="vgg").net == "vgg"


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_lpips_package(net):
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a CUDA-linked torchvision raises RuntimeError on import
        pytest.skip(f"torchvision matching this torch is not importable ({type(exc).__name__}); the functional "
                    "reference above covers the parity")
    lpips = pytest.importorskip("lpips", reason="the lpips package is not installed (not in the dev extra)")
    torch.manual_seed(0)
    ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()  # random backbone, bundled v0.1 heads
    ours = LPIPS(net)
    ours.load_weights(ref.state_dict(), "lpips package")
    x, y = _pair(2)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), ref(x, y).view(-1), rtol=1e-5, atol=1e-7)
