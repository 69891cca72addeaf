"""SinSR baseline and ResShift teacher training: coefficients, losses, one step."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rsd_deploy.models.schedule import Schedule
from rsd_deploy.train.ema import unwrap
from rsd_deploy.train.losses import (ScheduleTensors, deterministic_sample, resshift_loss, sinsr_coefficients,
                                     sinsr_losses)
from rsd_deploy.train.loops import Trainer


def test_sinsr_coefficients_match_the_spec():
    s = ScheduleTensors(Schedule.preset("v1"), torch.device("cpu"))
    # DISTILLATION.md 2.1: v1 values at t = 1 / t = 14
    for i, (m, j, k) in ((1, (0.1707, -0.0019, 0.8312)), (14, (0.9178, -0.0740, 0.1562))):
        got_k, got_m, got_j = sinsr_coefficients(s, i)
        assert got_m == pytest.approx(m, abs=1e-4)
        assert got_j == pytest.approx(j, abs=1e-4)
        assert got_k == pytest.approx(k, abs=1e-4)
    # the step keeps the marginal mean of q(z_{i-1} | z0, z_y) and its noise std
    sched = Schedule.preset("v1")
    for i in range(1, 15):
        k, m, j = sinsr_coefficients(s, i)
        assert k + m * (1 - sched.eta[i]) == pytest.approx(1 - sched.eta[i - 1], abs=1e-12)
        assert m * sched.eta[i] + j == pytest.approx(sched.eta[i - 1], abs=1e-12)
        assert m * np.sqrt(sched.eta[i]) == pytest.approx(np.sqrt(sched.eta[i - 1]), abs=1e-12)


def test_deterministic_sampler_with_an_oracle_returns_z0():
    """With a network that always predicts the true z0, the ODE lands exactly on z0 (noise inferred from z_t)."""
    s = ScheduleTensors(Schedule.preset("v1"), torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    z0, z_y = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    oracle = lambda x, t, lq: z0  # noqa: E731
    z_T = z_y + s.kappa * s.sqrt_eta[-1] * torch.randn(2, 3, 8, 8, generator=g)
    torch.testing.assert_close(deterministic_sample(oracle, s, z_T, z_y, z_y), z0)


def test_sinsr_losses_match_hand_computation(tiny_unet):
    schedule = Schedule.preset("v1")
    s = ScheduleTensors(schedule, torch.device("cpu"))
    student = copy.deepcopy(tiny_unet)
    g = torch.Generator().manual_seed(5)
    z_y, z_gt, eps = (torch.randn(2, 3, 16, 16, generator=g) * 0.5 for _ in range(3))
    lq = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    out = sinsr_losses(student, tiny_unet, s, z_y, lq, eps, z_gt, {"distill": 1.0, "inverse": 1.0, "gt": 1.0})
    with torch.no_grad():
        z_T = z_y + 2.0 * 0.99 * eps
        z = z_T
        for i in reversed(range(15)):
            x0 = tiny_unet(z / float(schedule.in_std[i]), torch.full((2,), i), lq)
            if i:
                m = np.sqrt(schedule.eta[i - 1] / schedule.eta[i])
                j = schedule.eta[i - 1] - np.sqrt(schedule.eta[i - 1] * schedule.eta[i])
                k = 1 - schedule.eta[i - 1] + np.sqrt(schedule.eta[i - 1] * schedule.eta[i]) - m
                z = float(k) * x0 + float(m) * z + float(j) * z_y
        z0_t = x0
        sc = float(schedule.in_std[14])
        last, zero = torch.full((2,), 14), torch.zeros(2, dtype=torch.int64)
        distill = (student(z_T / sc, last, lq) - z0_t).pow(2).mean((1, 2, 3))
        inverse = (student(z0_t / sc, zero, lq) - z_T).pow(2).mean((1, 2, 3))
        gt = (student(student(z_gt / sc, zero, lq) / sc, last, lq) - z_gt).pow(2).mean((1, 2, 3))
    for name, ref in (("distill", distill), ("inverse", inverse), ("gt", gt)):
        torch.testing.assert_close(out.terms[name].detach(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.total.detach(), distill.mean() + inverse.mean() + gt.mean(), rtol=1e-4, atol=1e-5)


def test_resshift_loss_matches_hand_computation(tiny_unet):
    schedule = Schedule.preset("v1")
    s = ScheduleTensors(schedule, torch.device("cpu"))
    g = torch.Generator().manual_seed(2)
    z0, z_y, eps = (torch.randn(2, 3, 16, 16, generator=g) for _ in range(3))
    lq = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    t = torch.tensor([0, 9])
    with torch.no_grad():
        loss = resshift_loss(tiny_unet, s, z0, z_y, lq, t, eps)
        eta = torch.tensor(schedule.eta[[0, 9]], dtype=torch.float32).view(-1, 1, 1, 1)
        z_t = z0 + eta * (z_y - z0) + 2.0 * eta.sqrt() * eps
        pred = tiny_unet(z_t / (4 * eta + 1).sqrt(), t, lq)
    torch.testing.assert_close(loss, (pred - z0).pow(2).mean((1, 2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["sinsr", "teacher"])
def test_one_step_trains_the_student_only(make_config, method):
    trainer = Trainer(make_config(method, optim={"iterations": 1}))
    m = trainer.method
    trained = m.student if method == "sinsr" else m.model
    before = {k: v.clone() for k, v in unwrap(trained).state_dict().items()}
    frozen = {k: v.clone() for k, v in m.teacher.state_dict().items()} if method == "sinsr" else None
    path = trainer.run()
    after = unwrap(trained).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if frozen is not None:
        assert all(torch.equal(frozen[k], m.teacher.state_dict()[k]) for k in frozen)
    assert all(np.isfinite(v) for v in trainer.history[-1].values())
    from rsd_deploy import load_checkpoint

    exported = load_checkpoint(path)
    assert exported.config.noise_channels == 0
