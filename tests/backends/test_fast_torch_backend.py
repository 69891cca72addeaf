"""Fast torch backend: graph cache semantics (CPU-reachable) and parity with the eager backend."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.backends.fast_torch_backend import (CapturedCall, FastTorchBackend, FastTorchOptions, GraphCache,
                                                eager_capture, shape_key)
from rsd_deploy.errors import BackendUnavailableError
from rsd_deploy.models import Schedule


class CountingCapture:
    def __init__(self):
        self.captured = []

    def __call__(self, fn, inputs) -> CapturedCall:
        self.captured.append(tuple(x.shape for x in inputs))
        return eager_capture(fn, inputs)


def test_graph_cache_captures_once_per_key_and_returns_clones():
    cap = CountingCapture()
    cache = GraphCache(cap, max_entries=2)
    fn = lambda x: x * 2  # noqa: E731
    a = torch.ones(1, 3, 4, 4)
    k = shape_key("encode", None, [a])
    out1 = cache.run(k, fn, [a])
    out2 = cache.run(k, fn, [a * 3])
    assert len(cap.captured) == 1 and cache.replays == 2
    assert torch.equal(out1, a * 2) and torch.equal(out2, a * 6)  # out1 not overwritten by the 2nd replay
    b = torch.ones(1, 3, 8, 4)
    cache.run(shape_key("encode", None, [b]), fn, [b])
    cache.run(shape_key("denoise", 3, [b]), fn, [b])
    assert len(cap.captured) == 3 and len(cache) == 2  # LRU: the first key was evicted
    assert k not in cache.keys()
    assert shape_key("denoise", 3, [b]) != shape_key("denoise", 2, [b])


def test_cpu_guards(tiny_unet, tiny_vq):
    sched = Schedule.preset("v3")
    with pytest.raises(BackendUnavailableError):
        FastTorchBackend(FastTorchOptions(tiny_unet, tiny_vq, sched, device="cpu", precision="fp16"))
    with pytest.raises(BackendUnavailableError):
        FastTorchBackend(FastTorchOptions(tiny_unet, tiny_vq, sched, device="cpu", cuda_graphs=True, precision="fp32"))


@pytest.mark.parametrize("fixture", ["tiny_unet", "tiny_rsd"])
def test_fast_backend_matches_eager_fp32_on_cpu(request, tiny_vq, fixture, one_thread):
    from rsd_deploy.backends.torch_backend import TorchBackend, TorchOptions

    unet = request.getfixturevalue(fixture)
    sched = Schedule.preset("v3" if fixture == "tiny_unet" else "v1")
    cap = CountingCapture()
    fast = FastTorchBackend(FastTorchOptions(unet, tiny_vq, sched, device="cpu", precision="fp32", channels_last=True, capture=cap))
    ref = TorchBackend(TorchOptions(unet, tiny_vq, sched, device="cpu", precision="fp32"))
    g = torch.Generator().manual_seed(0)
    img = torch.rand((1, 3, 64, 128), generator=g) * 2 - 1
    z = torch.randn((1, 3, 16, 32), generator=g)
    lq = torch.rand((1, 3, 16, 32), generator=g) * 2 - 1
    noise = torch.randn((1, 1, 16, 32), generator=g) if unet.config.noise_channels else None
    step = sched.T - 1
    pairs = [(fast.encode(img), ref.encode(img)), (fast.denoise(z, step, lq, noise), ref.denoise(z, step, lq, noise)),
             (fast.denoise(z, 0, lq, noise), ref.denoise(z, 0, lq, noise)), (fast.decode(z), ref.decode(z))]
    for ours, theirs in pairs:
        assert ours.dtype == torch.float32 and ours.is_contiguous()
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (ours - theirs).abs().max()
    assert len(cap.captured) == 4  # encode, denoise step T-1, denoise step 0, decode
    fast.denoise(z, step, lq, noise)
    assert len(cap.captured) == 4  # same shape and step: replayed, not captured again
    assert next(unet.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_fast_backend_bf16_keeps_codebook_fp32(tiny_unet, tiny_vq):
    fast = FastTorchBackend(FastTorchOptions(tiny_unet, tiny_vq, Schedule.preset("v3"), device="cpu", precision="bf16"))
    assert fast.vq.quantize.embedding.weight.dtype == torch.float32
    assert fast.vq.decoder.conv_in.weight.dtype == torch.bfloat16
    z = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = fast.decode(z)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
