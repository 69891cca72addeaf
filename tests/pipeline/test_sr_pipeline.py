"""The SR pipeline: parity with the official sampler goldens, sizes, tiling, seams, seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rsd_deploy.backends.torch_backend import TorchBackend, TorchOptions
from rsd_deploy.errors import ConfigError, ShapeError
from rsd_deploy.models import Schedule, sample_onestep
from rsd_deploy.pipeline import ModelInfo, ModelKind, SamplingNoise, SRPipeline, TileConfig, TilePlan
from tests.conftest import DATA, FIXTURES
from tests.pipeline.helpers import (LocalStandInBackend, TileStatsStandInBackend, random_rgb, schedule,
                                    seam_ratio, tile_borders)


def golden():
    path = FIXTURES / "pipeline_tiny" / "golden.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return np.load(path)


def golden_lr() -> torch.Tensor:
    """The golden's input as its README states: 00003.png read with Pillow, crop box (240, 96, 272, 128)."""
    PIL = pytest.importorskip("PIL.Image")
    rgb = np.asarray(PIL.open(DATA / "realset65" / "00003.png").convert("RGB"), np.float32) / 255.0
    crop = rgb[96:128, 240:272] * 2.0 - 1.0
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]


@pytest.mark.parametrize("kind,key", [(ModelKind.RESSHIFT_V3, "decoded_padded"),
                                      (ModelKind.SINSR, "onestep_decoded_padded")])
def test_pipeline_reproduces_the_official_sampler_with_replayed_noise(tiny_unet, tiny_vq, one_thread, kind, key):
    g = golden()
    lq = golden_lr()
    np.testing.assert_array_equal(lq.numpy(), g["lr"])
    sched = Schedule.preset("v3")  # the golden ran v3 (T=4); its one-step path is t = 3
    pipe = SRPipeline(TorchBackend(TorchOptions(tiny_unet, tiny_vq, sched)), ModelInfo(kind, sched, 16))
    noises = [g["prior_noise"]] + (list(g["step_noise"]) if kind.multistep else [])
    noise = SamplingNoise.from_list([torch.from_numpy(np.asarray(n)) for n in noises], 0, kind.multistep)
    out = pipe.sample(lq, noise).numpy()
    assert out.shape == g[key].shape == (1, 3, 128, 128)
    # measured 7.7e-6; an argmin flip (min code gap 2.6e-5) would show as an error of ~0.1
    np.testing.assert_allclose(out, g[key], atol=1e-4, rtol=0)


def test_rsd_one_step_matches_the_models_sampler(tiny_rsd, tiny_vq, one_thread):
    sched = Schedule.preset("v1")
    lq = golden_lr()[..., :16, :32]
    gen = torch.Generator().manual_seed(0)
    prior, noise_map = torch.randn(1, 3, 16, 32, generator=gen), torch.randn(1, 1, 16, 32, generator=gen)
    pipe = SRPipeline(TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched)), ModelInfo(ModelKind.RSD, sched, 16, 1))
    out = pipe.sample(lq, SamplingNoise(prior=prior, student=noise_map))
    with torch.no_grad():
        up = torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)
        x0 = sample_onestep(tiny_rsd, sched, tiny_vq.encode(up), lq, noises=[prior, noise_map])
        ref = tiny_vq.decode(x0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (33, 17)])
def test_output_is_exactly_four_times_for_tiny_and_odd_sizes(tiny_rsd, tiny_vq, h, w):
    sched = Schedule.preset("v1")
    pipe = SRPipeline(TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched)), ModelInfo(ModelKind.RSD, sched, 16, 1),
                      TileConfig(tile=256, overlap=32))
    out = pipe.upscale_array(random_rgb(h, w, seed=h))
    assert out.shape == (4 * h, 4 * w, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= -1.0 and out.max() <= 1.0


def test_300x200_is_four_times_with_tiles_and_every_tile_runs_once():
    backend = LocalStandInBackend(noise_channels=1)
    pipe = SRPipeline(backend, ModelInfo(ModelKind.RSD, schedule("v1"), 16, 1), TileConfig(64, 16, batch=4))
    out = pipe.upscale_array(random_rgb(300, 200))
    plan = TilePlan.build(300, 200, 64, 16)
    assert out.shape == (1200, 800, 3)
    assert backend.calls["encode"] == backend.calls["decode"] == -(-len(plan) // 4)
    assert backend.steps_seen == [14] * backend.calls["encode"]  # one step at t = T-1


@pytest.mark.slow
def test_300x200_with_the_tiny_fixtures(tiny_rsd, tiny_vq):
    sched = Schedule.preset("v1")
    pipe = SRPipeline(TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched)), ModelInfo(ModelKind.RSD, sched, 16, 1),
                      TileConfig(64, 16, batch=4))
    assert pipe.upscale_array(random_rgb(300, 200)).shape == (1200, 800, 3)


def test_multistep_runs_the_ancestral_loop_in_order():
    backend = LocalStandInBackend()
    pipe = SRPipeline(backend, ModelInfo(ModelKind.RESSHIFT_V3, schedule("v3"), 16), TileConfig(None, 0))
    pipe.upscale_array(random_rgb(16, 16))
    assert backend.steps_seen == [3, 2, 1, 0]


def _real_lr(h=200, w=300) -> np.ndarray:
    import cv2

    path = DATA / "realset65" / "00003.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return np.ascontiguousarray(cv2.imread(str(path))[:h, :w, ::-1])


def test_tiled_equals_untiled_away_from_borders_for_a_local_network():
    """Geometry check: with networks that only look at a pixel's neighbourhood, tiling (offsets,
    padding, noise positions, blending) must be invisible except within a few px of tile edges."""
    lr = _real_lr()
    info = ModelInfo(ModelKind.RSD, schedule("v1"), 16, 1)
    full = SRPipeline(LocalStandInBackend(1), info, TileConfig(None, 0)).upscale_array(lr)
    tiled = SRPipeline(LocalStandInBackend(1), info, TileConfig(64, 16, batch=3)).upscale_array(lr)
    by, bx = tile_borders(TilePlan.build(200, 300, 64, 16))
    away = np.ones(full.shape[:2], bool)
    for c in by:
        away[max(c - 12, 0):c + 12] = False
    for c in bx:
        away[:, max(c - 12, 0):c + 12] = False
    away[-12:], away[:, -12:] = False, False  # the untiled run pads the image's bottom/right edge
    assert away.mean() > 0.4
    np.testing.assert_allclose(tiled[away], full[away], atol=1e-5)
    # near tile edges only the bicubic/bilinear border handling differs: small
    np.testing.assert_allclose(tiled[:-12, :-12], full[:-12, :-12], atol=0.05)


def test_feathered_tiles_show_no_seams_where_unblended_tiles_do():
    """With per-tile statistics (as GroupNorm gives real networks) tiles disagree by an offset;
    the feathered blend hides the tile borders, butting tiles (overlap 0) show them."""
    lr = _real_lr()
    info = ModelInfo(ModelKind.RSD, schedule("v1"), 16, 1)
    full = SRPipeline(TileStatsStandInBackend(1), info, TileConfig(None, 0)).upscale_array(lr)
    feathered = SRPipeline(TileStatsStandInBackend(1), info, TileConfig(64, 16, batch=4)).upscale_array(lr)
    butted = SRPipeline(TileStatsStandInBackend(1), info, TileConfig(64, 0, batch=4)).upscale_array(lr)
    borders = tile_borders(TilePlan.build(200, 300, 64, 16))
    reference = seam_ratio(full, *borders)  # the same lines in the untiled image (content edges)
    assert seam_ratio(feathered, *borders) < 1.15 * reference  # measured 1.37 vs 1.36
    butted_borders = tile_borders(TilePlan.build(200, 300, 64, 0))
    assert seam_ratio(butted, *butted_borders) > 3.0 * seam_ratio(full, *butted_borders)  # measured 6.5 vs 1.25
    # the tile offset is bounded: 0.5 x the tile-mean difference, never more
    assert np.abs(feathered - full).max() < 0.5


def test_seed_reproducible_and_batching_invariant(tiny_rsd, tiny_vq):
    sched = Schedule.preset("v1")
    info = ModelInfo(ModelKind.RSD, sched, 16, 1)
    backend = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, sched))
    lr = random_rgb(32, 48, seed=4)
    a = SRPipeline(backend, info, TileConfig(32, 16, batch=1), seed=11).upscale_array(lr)
    b = SRPipeline(backend, info, TileConfig(32, 16, batch=1), seed=11).upscale_array(lr)
    c = SRPipeline(backend, info, TileConfig(32, 16, batch=3), seed=11).upscale_array(lr)
    d = SRPipeline(backend, info, TileConfig(32, 16, batch=1), seed=12).upscale_array(lr)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-4)  # batch changes only the kernels' reduction order
    assert np.abs(a - d).mean() > 1e-2


def test_pipeline_rejects_inconsistent_setups():
    backend = LocalStandInBackend()
    backend.supported_steps = frozenset({14})
    with pytest.raises(ConfigError, match="needs all 15 steps"):
        SRPipeline(backend, ModelInfo(ModelKind.RESSHIFT_V1, schedule("v1"), 16))
    with pytest.raises(ConfigError):
        SRPipeline(LocalStandInBackend(), ModelInfo(ModelKind.SINSR, schedule("v1"), 16), TileConfig(32, 32))
    pipe = SRPipeline(LocalStandInBackend(), ModelInfo(ModelKind.RSD, schedule("v1"), 16, 1))
    with pytest.raises(ShapeError):
        pipe.sample(torch.zeros(1, 3, 20, 16), pipe.draw_noise([(0, 0)], 20, 16))
    with pytest.raises(ShapeError):
        pipe.upscale_array(np.zeros((0, 5, 3), np.uint8))


def test_tile_size_rounds_up_to_the_input_multiple():
    pipe = SRPipeline(LocalStandInBackend(), ModelInfo(ModelKind.SINSR, schedule("v1"), 64), TileConfig(100, 16))
    assert pipe.tiling.tile == 128


def test_float_input_views_and_step_noise_count():
    pipe = SRPipeline(LocalStandInBackend(), ModelInfo(ModelKind.RESSHIFT_V3, schedule("v3"), 16), TileConfig(16, 4))
    bgr = np.random.default_rng(0).uniform(-1, 1, (20, 24, 3)).astype(np.float32)
    out = pipe.upscale_array(bgr[:, :, ::-1])  # a negative-stride view is accepted
    assert out.shape == (80, 96, 3)
    with pytest.raises(ShapeError, match="needs 3 step noises"):
        pipe.sample(torch.zeros(1, 3, 16, 16), SamplingNoise(prior=torch.zeros(1, 3, 16, 16)))
