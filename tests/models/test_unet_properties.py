"""Export readiness and input checks of the UNet."""
import pytest
import torch

from rsd_deploy.config import UNetConfig
from rsd_deploy.models import UNetSwin


def test_position_bias_is_cached_for_inference_only(tiny_unet):
    attn = tiny_unet.input_blocks[1][1].blocks[0].attn
    with torch.no_grad():
        a = attn.position_bias(torch.float32)
        b = attn.position_bias(torch.float32)
    assert a is b
    with torch.enable_grad():
        c = attn.position_bias(torch.float32)
    assert c is not a and torch.equal(c, a) and c.requires_grad


def test_forward_is_batch_consistent_and_shape_generic(tiny_unet):
    torch.manual_seed(0)
    x, lq = torch.randn(2, 3, 32, 48), torch.randn(2, 3, 32, 48)
    t = torch.tensor([3, 3])
    with torch.no_grad():
        both = tiny_unet(x, t, lq)
        first = tiny_unet(x[:1], t[:1], lq[:1])
    assert both.shape == (2, 3, 32, 48)
    assert torch.allclose(both[:1], first, atol=1e-5)


def test_bad_sizes_and_noise_are_refused(tiny_unet, tiny_rsd):
    x = torch.randn(1, 3, 24, 16)
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_unet(x, torch.tensor([0]), x)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="noise"):
        tiny_rsd(x, torch.tensor([0]), x)
    with pytest.raises(ValueError, match="no noise"):
        tiny_unet(x, torch.tensor([0]), x, torch.randn(1, 1, 16, 16))


@pytest.mark.slow
def test_traces_with_symbolic_sizes():
    """torch.export with dynamic H and W: no data-dependent Python and no host-built masks in forward.

    Known limit of this path: torch.export specialises the window-row count above the masked bottom row
    (nh - 1) away from 1, so its programs refuse sizes with exactly two window rows at a shifted level
    (e.g. latent 16 here). The TorchScript ONNX export that rsd-export uses has no such guard and is
    tested at 16x16 and 16x48 (tests/export/test_onnx_export.py)."""
    model = UNetSwin(UNetConfig.tiny()).eval()
    x = torch.randn(1, 3, 32, 32)
    h = torch.export.Dim("h", min=1, max=8)
    w = torch.export.Dim("w", min=1, max=8)
    dyn = {"x": {2: 16 * h, 3: 16 * w}, "t": None, "lq": {2: 16 * h, 3: 16 * w}, "noise": None}
    with torch.no_grad():
        ep = torch.export.export(model, (x, torch.tensor([3]), x, None), dynamic_shapes=dyn)
        other = torch.randn(1, 3, 48, 64)  # another size, non-square (level-0 window rows 6 and 8)
        out = ep.module()(other, torch.tensor([3]), other, None)
        ref = model(other, torch.tensor([3]), other)
    assert torch.allclose(out, ref, atol=1e-5)


def test_full_size_parameter_count():
    with torch.device("meta"):
        assert sum(p.numel() for p in UNetSwin(UNetConfig.full()).parameters()) == 118_593_583
        assert sum(p.numel() for p in UNetSwin(UNetConfig.full(noise_channels=1)).parameters()) == 118_595_023
