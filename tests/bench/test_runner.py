"""Runner: every contender x backend x size is measured with warm-up and repeats through the Backend
interface; the SR loop over a backend equals the reference samplers."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.bench.contenders import CONTENDERS, parse_backend_variant
from rsd_deploy.bench.runner import (BenchConfig, denoise_step_for, draw_noises, parse_size,
                                     run_benchmark, super_resolve)
from rsd_deploy.errors import ConfigError, RSDError
from rsd_deploy.models import SamplingNoise, Schedule, sample_onestep, sample_resshift

from .conftest import CountingBackend, fake_models


def _run(config, **kw):
    backends = []

    def factory(variant, contender, models, schedule, cfg, workdir):
        b = CountingBackend(noise_channels=contender.noise_channels, **kw)
        b.contender = contender.key
        b.variant = variant.key
        backends.append(b)
        return b

    res = run_benchmark(config, models=fake_models(), backend_factory=factory, progress=False)
    return res, backends


def test_every_pair_is_warmed_up_repeated_and_closed():
    cfg = BenchConfig(backends=("torch-fp32", "torch-bf16"), sizes=((16, 16), (32, 16)), warmup=2, repeats=3)
    res, backends = _run(cfg)
    assert len(backends) == 2 * 4
    assert len(res["entries"]) == 2 * 4 * 2
    runs_per_size = 2 + 3  # warm-up (incl. the cold call) + timed repeats
    for b in backends:
        nfe = CONTENDERS[b.contender].nfe
        assert b.calls["encode"] == b.calls["decode"] == 2 * runs_per_size
        assert b.calls["denoise"] == 2 * runs_per_size * nfe
        assert b.closed
    for e in res["entries"]:
        assert e["status"] == "ok"
        assert e["latency_ms"]["n"] == 3 and len(e["samples_ms"]) == 3
        assert set(e["stages_ms"]) == {"encode", "denoise", "decode", "host"}
        assert e["sync_calls"] == 2 + 1 + 2 * 3
        assert e["sr_size"] == [4 * e["lr_size"][0], 4 * e["lr_size"][1]]
        assert e["throughput_ips"] == pytest.approx(1000.0 / e["latency_ms"]["p50"])


def test_step_order_and_rsd_noise_map():
    cfg = BenchConfig(contenders=("rsd", "resshift-v3"), sizes=((16, 16),), warmup=1, repeats=1, batch=2)
    _, backends = _run(cfg)
    rsd, v3 = backends
    assert rsd.steps == [14, 14] and rsd.noise_shapes == [(2, 1, 16, 16)] * 2
    assert v3.steps == [3, 2, 1, 0] * 2 and v3.noise_shapes == [None] * 8


def test_stage_times_come_from_the_backend_calls(fake_clock):
    cfg = BenchConfig(contenders=("resshift-v3",), sizes=((16, 16),), warmup=1, repeats=2)
    res, _ = _run(cfg, clock=fake_clock, stage_ms=(3.0, 5.0, 7.0))
    e = res["entries"][0]
    assert e["stages_ms"]["encode"]["p50"] == pytest.approx(3.0)
    assert e["stages_ms"]["denoise"]["p50"] == pytest.approx(4 * 5.0)
    assert e["stages_ms"]["decode"]["p50"] == pytest.approx(7.0)
    assert e["latency_ms"]["p50"] == pytest.approx(30.0)  # the fake clock only moves inside the stages


def test_folded_step_graph_gives_timing_only_multistep_rows():
    cfg = BenchConfig(contenders=("rsd", "resshift-v1"), sizes=((16, 16),), warmup=1, repeats=1)
    res, backends = _run(cfg, supported_steps=frozenset({14}))
    by = {e["contender"]: e for e in res["entries"]}
    assert by["rsd"]["timing_only_steps"] is False
    assert by["resshift-v1"]["timing_only_steps"] is True
    assert backends[1].steps == [14] * 30  # the T-1 graph, called T times per run
    steps, timing_only = denoise_step_for(CountingBackend(), CONTENDERS["resshift-v3"], Schedule.preset("v3"))
    assert steps is None and not timing_only


def test_bad_sizes_and_unavailable_backends_are_recorded_not_fatal():
    cfg = BenchConfig(contenders=("sinsr",), backends=("torch-fp32",), sizes=((16, 16), (24, 24)), repeats=1)
    res, _ = _run(cfg)
    ok, bad = res["entries"]
    assert ok["status"] == "ok"
    assert bad["status"] == "failed" and "multiple of 16" in bad["reason"]

    def failing_factory(variant, contender, models, schedule, cfg, workdir):
        raise RSDError("no engines here")

    res = run_benchmark(BenchConfig(contenders=("rsd",), repeats=1, sizes=((16, 16),)), models=fake_models(),
                        backend_factory=failing_factory, progress=False)
    assert res["entries"][0]["status"] == "skipped" and res["entries"][0]["reason"] == "no engines here"


def test_config_validation_errors():
    with pytest.raises(ConfigError, match="not positive"):  # a bad option value: usage error, exit 2
        BenchConfig(sizes=((0, 16),)).validate()
    with pytest.raises(RSDError, match="unknown contender"):
        BenchConfig(contenders=("esrgan",)).validate()
    with pytest.raises(RSDError, match="unknown backend"):
        BenchConfig(backends=("tflite-fp32",)).validate()
    with pytest.raises(RSDError, match="int8"):
        parse_backend_variant("torch-int8", "cpu")
    with pytest.raises(RSDError, match="--vq"):
        BenchConfig(checkpoints={"rsd": "x.pth"}).validate()
    assert parse_size("64") == (64, 64) and parse_size("96x128") == (96, 128)
    with pytest.raises(RSDError):
        parse_size("big")


@pytest.mark.parametrize("fixture, key", [("tiny_unet", "resshift-v3"), ("tiny_unet", "sinsr"),
                                          ("tiny_rsd", "rsd")])
def test_super_resolve_equals_reference_samplers(request, tiny_vq, fixture, key, one_thread):
    """The bench's SR loop over the torch backend computes what rsd_deploy.models.sampler computes."""
    from rsd_deploy.backends.base import create_backend

    unet = request.getfixturevalue(fixture)
    contender = CONTENDERS[key]
    schedule = Schedule.preset(contender.schedule)
    backend = create_backend("torch", unet=unet, vq=tiny_vq, schedule=schedule, device="cpu", precision="fp32")
    lq = torch.rand((1, 3, 16, 32), generator=torch.Generator().manual_seed(1)) * 2 - 1
    noises = draw_noises(contender, schedule, (1, 3, 16, 32), torch.Generator().manual_seed(2), backend.device)
    ours = super_resolve(backend, contender, schedule, lq, noises)
    with torch.no_grad():
        z_y = tiny_vq.encode(torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic",
                                                             align_corners=False))
        if contender.one_step:
            listed = [noises.prior] + ([noises.student] if noises.student is not None else [])
            z = sample_onestep(unet, schedule, z_y, lq, noises=listed)
        else:
            z = sample_resshift(unet, schedule, z_y, lq, noises=[noises.prior, *noises.steps])
        ref = tiny_vq.decode(z).clamp(-1, 1)
    assert ours.shape == (1, 3, 64, 128)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)


def test_noise_draws_follow_the_official_order():
    g = torch.Generator().manual_seed(5)
    n = draw_noises(CONTENDERS["resshift-v3"], Schedule.preset("v3"), (1, 3, 4, 4), g, torch.device("cpu"))
    assert isinstance(n, SamplingNoise) and n.student is None and len(n.steps) == 4
    g2 = torch.Generator().manual_seed(5)
    prior = torch.randn((1, 3, 4, 4), generator=g2)
    first_step = torch.randn((1, 3, 4, 4), generator=g2)
    assert torch.equal(n.prior, prior) and torch.equal(n.steps[0], first_step)


def test_tiled_runs_go_through_the_pipeline_tiles():
    from rsd_deploy.pipeline.tiling import TilePlan

    cfg = BenchConfig(contenders=("rsd", "resshift-v3"), sizes=((40, 56), (16, 16)), tile=16, tile_overlap=4,
                      warmup=1, repeats=2)
    res, backends = _run(cfg)
    tiles = len(TilePlan.build(40, 56, 16, 4).tiles)
    assert tiles > 1
    big, small = res["entries"][0], res["entries"][1]
    assert big["tiled"]["tile"] == 16 and "tiled" not in small
    rsd = backends[0]
    assert rsd.calls["encode"] == 3 * tiles + 3  # (cold + 2 timed) x tiles, then the untiled size
    assert big["stages_ms"]["denoise"]["n"] == 2 and big["status"] == "ok"
    assert res["entries"][2]["tiled"] and res["entries"][2]["status"] == "ok"


def test_random_weights_do_not_depend_on_contender_order():
    from rsd_deploy.bench.contenders import random_models

    a = random_models([CONTENDERS["rsd"], CONTENDERS["sinsr"]], arch="tiny", seed=3)
    b = random_models([CONTENDERS["resshift-v1"], CONTENDERS["rsd"]], arch="tiny", seed=3)
    for key_a, key_b in (("rsd", "rsd"), ("sinsr", "resshift-v1")):
        sa, sb = a.unets[key_a].state_dict(), b.unets[key_b].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.unets["sinsr"] is not a.unets["rsd"]
    assert all(torch.any(p) for p in a.unets["rsd"].parameters())  # no all-zero tensor left
    assert all(torch.equal(x, y) for x, y in zip(a.vq.parameters(), b.vq.parameters()))


@pytest.mark.slow
def test_onnxruntime_rows_export_once_and_match_torch(tmp_path):
    """Tiny architecture through ONNX Runtime: graphs exported into --onnx DIR on first use, reused by
    the multi-step contender (timing-only), and the one-step output matches torch fp32."""
    pytest.importorskip("onnxruntime")
    from rsd_deploy.bench import benchmark_and_report

    onnx_dir = tmp_path / "onnx"
    cfg = BenchConfig(contenders=("sinsr", "resshift-v3"), backends=("torch-fp32", "ort-fp32"), arch="tiny",
                      sizes=((16, 16),), repeats=1, threads=1, onnx_dir=str(onnx_dir), output=str(tmp_path / "o"),
                      quality_lr=str(tmp_path / "lr"), quality_limit=1)
    import cv2
    import numpy as np

    (tmp_path / "lr").mkdir()
    cv2.imwrite(str(tmp_path / "lr" / "a.png"), np.random.default_rng(0).integers(0, 255, (16, 24, 3), np.uint8))
    benchmark_and_report(cfg, progress=False)
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["sinsr"]  # v3 reused the SinSR graphs
    import json

    res = json.loads((tmp_path / "o" / "results.json").read_text())
    by = {(e["contender"], e["backend"]): e for e in res["entries"]}
    assert by[("sinsr", "ort-fp32")]["status"] == "ok"
    assert by[("resshift-v3", "ort-fp32")]["timing_only_steps"] is True
    q = {(r["contender"], r["backend"]): r for r in res["quality"]["rows"]}
    assert q[("sinsr", "ort-fp32")]["vs_reference"]["max_abs"] < 1e-3
    assert q[("resshift-v3", "ort-fp32")]["status"] == "skipped"


def test_backend_variant_names():
    v = parse_backend_variant("torch-compile-bf16", "cuda")
    assert (v.runtime, v.precision) == ("torch-compile", "bf16")
    assert parse_backend_variant("ort-int8", "cpu").provider == "CPUExecutionProvider"
    assert parse_backend_variant("ort-trt-fp16", "cuda").provider == "TensorrtExecutionProvider"
    from rsd_deploy.bench.contenders import unavailable_reason

    if not torch.cuda.is_available():
        assert "CUDA" in unavailable_reason(parse_backend_variant("torch-fast-fp16", "cpu"))
        assert unavailable_reason(parse_backend_variant("torch-fp16", "cpu"))
    assert unavailable_reason(parse_backend_variant("torch-fp32", "cpu")) is None
