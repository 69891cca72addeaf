"""GPU: the CUDA-graph fast path equals eager fp32 within precision bounds, one capture per shape/step,
and the CUDA-event timer measures synchronised runs."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.models import Schedule

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("bf16", 0.25), ("fp16", 0.1)])
def test_cuda_graph_backend_matches_eager(tiny_rsd, tiny_vq, precision, atol):
    from rsd_deploy.backends.torch_backend import TorchBackend, TorchOptions
    from rsd_deploy.backends.fast_torch_backend import FastTorchBackend, FastTorchOptions

    sched = Schedule.preset("v1")
    fast = FastTorchBackend(FastTorchOptions(tiny_rsd, tiny_vq, sched, device="cuda", precision=precision))
    ref = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched, device="cuda", precision="fp32"))
    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.randn((1, 3, 16, 32), generator=g, device="cuda")
    lq = torch.rand((1, 3, 16, 32), generator=g, device="cuda") * 2 - 1
    noise = torch.randn((1, 1, 16, 32), generator=g, device="cuda")
    img = torch.rand((1, 3, 64, 128), generator=g, device="cuda") * 2 - 1
    for _ in range(2):  # the second call replays the captured graphs
        assert torch.allclose(fast.denoise(z, 14, lq, noise), ref.denoise(z, 14, lq, noise), atol=atol)
        assert torch.allclose(fast.encode(img), ref.encode(img), atol=atol)
    assert fast.graphs.captures == 2 and fast.graphs.replays == 4
    fast.close()


def test_cuda_event_timer_is_synchronised():
    from rsd_deploy.bench.timer import DeviceTimer, measure

    timer = DeviceTimer("cuda")
    x = torch.randn(2048, 2048, device="cuda")

    def run(rec):
        with rec.stage("denoise"):
            for _ in range(5):
                x @ x

    m = measure(run, timer, warmup=2, repeats=5)
    assert m.total.n == 5 and m.stages["denoise"].p50 > 0 and m.peak_device_mib > 0
    assert m.sync_calls == 2 + 1 + 2 * 5
