"""Position-seeded noise: reproducible, order independent, consistent across overlapping tiles."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.errors import ShapeError
from rsd_deploy.pipeline.noise import SamplingNoise, cell_seed, draw_region_noise, draw_tiles_noise


def test_same_seed_same_noise_and_other_seed_other_noise():
    a = draw_region_noise(7, 10, 20, 48, 32, noise_channels=1)
    b = draw_region_noise(7, 10, 20, 48, 32, noise_channels=1)
    c = draw_region_noise(8, 10, 20, 48, 32, noise_channels=1)
    assert torch.equal(a.prior, b.prior) and torch.equal(a.student, b.student)
    assert not torch.allclose(a.prior, c.prior)
    assert a.prior.shape == (1, 3, 48, 32) and a.student.shape == (1, 1, 48, 32) and a.steps == ()


def test_a_region_is_the_crop_of_any_larger_region():
    """Overlapping tiles (and tiled vs untiled runs) see the same noise at the same latent pixel."""
    big = draw_region_noise(3, 0, 0, 200, 150, noise_channels=1, num_steps=4)
    for (y, x, h, w) in [(0, 0, 16, 16), (48, 100, 64, 50), (130, 63, 70, 2), (64, 64, 64, 64)]:
        small = draw_region_noise(3, y, x, h, w, noise_channels=1, num_steps=4)
        assert torch.equal(small.prior, big.prior[..., y:y + h, x:x + w])
        assert torch.equal(small.student, big.student[..., y:y + h, x:x + w])
        assert len(small.steps) == 4
        for s_small, s_big in zip(small.steps, big.steps):
            assert torch.equal(s_small, s_big[..., y:y + h, x:x + w])


def test_batched_tiles_do_not_depend_on_order():
    origins = [(0, 0), (0, 48), (48, 0), (48, 48)]
    forward = draw_tiles_noise(5, origins, 64, 64, noise_channels=1)
    backward = draw_tiles_noise(5, origins[::-1], 64, 64, noise_channels=1)
    assert torch.equal(forward.prior, backward.prior.flip(0))
    assert torch.equal(forward.student, backward.student.flip(0))


def test_noise_is_standard_normal_and_cells_differ():
    n = draw_region_noise(0, 0, 0, 256, 256, num_steps=2)
    x = torch.cat([n.prior.flatten()] + [s.flatten() for s in n.steps])
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1.0) < 0.01
    cells = n.prior[0, 0].unfold(0, 64, 64).unfold(1, 64, 64).reshape(16, -1)
    corr = torch.corrcoef(cells)
    assert (corr - torch.eye(16)).abs().max() < 0.1  # no two cells repeat the same noise
    assert len({cell_seed(0, r, c) for r in range(20) for c in range(20)}) == 400


def test_from_list_follows_the_sampler_convention():
    p, m, s0, s1 = (torch.randn(1, 3, 4, 4) for _ in range(4))
    rsd = SamplingNoise.from_list([p, m[:, :1]], noise_channels=1, multistep=False)
    assert rsd.prior is p and rsd.student.shape == (1, 1, 4, 4)
    multi = SamplingNoise.from_list([p, s0, s1], noise_channels=0, multistep=True)
    assert multi.steps == (s0, s1) and multi.student is None
    with pytest.raises(ShapeError):
        SamplingNoise.from_list([p], noise_channels=1, multistep=False)
    with pytest.raises(ShapeError):
        SamplingNoise.from_list([p, s0], noise_channels=0, multistep=False)
    with pytest.raises(ShapeError):
        draw_region_noise(0, -1, 0, 4, 4)
