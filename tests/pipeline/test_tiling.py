"""Tile geometry and feathered blending (pure numpy)."""
from __future__ import annotations

import numpy as np
import pytest

from rsd_deploy.errors import ConfigError
from rsd_deploy.pipeline.tiling import (FeatherBlender, TilePlan, feather_weights_1d, raised_cosine_ramp,
                                        tile_starts)


def test_tile_starts_stride_and_clamped_last():
    assert tile_starts(300, 64, 16) == [0, 48, 96, 144, 192, 236]
    assert tile_starts(256, 64, 0) == [0, 64, 128, 192]
    assert tile_starts(64, 64, 16) == [0]
    assert tile_starts(10, 64, 16) == [0]
    assert tile_starts(65, 64, 16) == [0, 1]


@pytest.mark.parametrize("length,tile,overlap", [(300, 64, 16), (1000, 96, 31), (97, 32, 8), (33, 16, 15)])
def test_tile_starts_cover_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    for a, b in zip(starts, starts[1:]):
        assert 0 < b - a <= tile - overlap  # neighbours overlap by >= overlap, no gaps


@pytest.mark.parametrize("length,tile,overlap", [(0, 64, 8), (100, 0, 0), (100, 64, 64), (100, 64, -1)])
def test_tile_starts_rejects_bad_geometry(length, tile, overlap):
    with pytest.raises(ConfigError):
        tile_starts(length, tile, overlap)


def test_raised_cosine_ramp_is_a_partition_of_unity():
    for n in (1, 2, 7, 64):
        r = raised_cosine_ramp(n)
        assert r.shape == (n,) and (r > 0).all() and (r < 1).all()
        assert np.all(np.diff(r) > 0)
        np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)


def test_feather_weights_ramp_only_inside_overlaps():
    starts = tile_starts(200, 64, 16)  # [0, 48, 96, 136]
    ws = feather_weights_1d(starts, 64, 4)
    assert all(w.shape == (256,) for w in ws)
    assert ws[0][0] == 1.0 and ws[-1][-1] == 1.0  # image borders get full weight
    assert ws[0][191] == 1.0 and ws[0][192] < 1.0  # tile 0 ramps down where tile 1 starts (48 * 4)
    assert ws[1][63] < 1.0 and ws[1][64] == 1.0  # tile 1 ramps up over its 16 px overlap
    # the clamped last tile overlaps its neighbour by 24 px: a longer ramp
    assert ws[3][95] < 1.0 and ws[3][96] == 1.0


def _run_blender(plan: TilePlan, tile_fn, scale=4, channels=3, order=None):
    out = np.full((plan.height * scale, plan.width * scale, channels), np.nan, np.float32)
    emitted = []

    def sink(y0, rows):
        assert np.isnan(out[y0:y0 + rows.shape[0]]).all(), "a row was emitted twice"
        out[y0:y0 + rows.shape[0]] = rows
        emitted.append((y0, rows.shape[0]))

    blender = FeatherBlender(plan, scale, channels, sink)
    for t in plan.tiles:
        blender.add(t, tile_fn(t))
    assert blender.done
    return out, emitted


@pytest.mark.parametrize("h,w,tile,overlap", [(37, 53, 16, 4), (64, 64, 64, 8), (100, 30, 32, 8), (5, 70, 16, 15)])
def test_blending_reproduces_a_globally_consistent_image_exactly(h, w, tile, overlap):
    """Tiles cut from one SR image must blend back to that image: offsets and normalisation are right."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((h * 4, w * 4, 3)).astype(np.float32)
    plan = TilePlan.build(h, w, tile, overlap)
    out, emitted = _run_blender(plan, lambda t: truth[t.y * 4:(t.y + t.h) * 4, t.x * 4:(t.x + t.w) * 4])
    np.testing.assert_allclose(out, truth, atol=1e-5)
    # rows come out once, top to bottom, contiguous
    assert emitted[0][0] == 0 and sum(n for _, n in emitted) == h * 4
    assert all(a + n == b for (a, n), (b, _) in zip(emitted, emitted[1:]))


def test_blending_feathers_a_tile_offset_instead_of_a_seam():
    """Neighbouring tiles that disagree by a constant blend with a smooth ramp, not a step."""
    plan = TilePlan.build(16, 64, 32, 16)  # xs = [0, 16, 32], one tile row
    assert plan.xs == (0, 16, 32)
    offset = {0: 0.0, 1: 1.0, 2: 0.0}
    out, _ = _run_blender(plan, lambda t: np.full((t.h * 4, t.w * 4, 1), offset[t.col], np.float32), channels=1)
    profile = out[0, :, 0]
    steps = np.abs(np.diff(profile))
    # raised cosine over a 64-px SR overlap: max slope pi/(2*64) ~ 0.025 per px (plain averaging: 0.5)
    assert steps.max() < 0.03
    assert profile[0] == pytest.approx(0.0, abs=1e-6) and profile.max() == pytest.approx(1.0, abs=0.02)


def test_accumulator_holds_only_the_rows_in_flight():
    """Streaming: the float accumulator spans about one tile row, not the image height."""
    plan = TilePlan.build(400, 40, 32, 8)
    blender = FeatherBlender(plan, 4, 3, lambda y0, rows: None)
    biggest = 0
    for t in plan.tiles:
        blender.add(t, np.zeros((t.h * 4, t.w * 4, 3), np.float32))
        biggest = max(biggest, blender._acc.shape[0])
    assert biggest <= plan.tile_h * 4
    assert blender.done


def test_plan_untiled_and_small_images():
    plan = TilePlan.build(7, 13, None, 0)
    assert (plan.tile_h, plan.tile_w, plan.ys, plan.xs) == (7, 13, (0,), (0,))
    plan = TilePlan.build(1, 300, 64, 16)
    assert plan.tile_h == 1 and len(plan) == len(tile_starts(300, 64, 16))
    with pytest.raises(ConfigError):
        TilePlan.build(0, 10, 64, 0)
