"""RSD distillation: student init, one step's effect, hand-computed loss terms, exact resume."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rsd_deploy.models.schedule import Schedule
from rsd_deploy.train.ema import unwrap
from rsd_deploy.train.losses import FakeModel, ScheduleTensors, fake_losses, generator_loss
from rsd_deploy.train.loops import Trainer
from rsd_deploy.train.rsd import make_student


def _params(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in unwrap(module).state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    after = unwrap(module).state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_student_equals_teacher_at_init(tiny_unet):
    student = make_student(tiny_unet)
    assert student.config.noise_channels == 1
    w = student.state_dict()["input_blocks.0.0.weight"]
    assert w.shape[1] == 7 and torch.count_nonzero(w[:, 6:]) == 0
    g = torch.Generator().manual_seed(0)
    x, lq = torch.randn(2, 3, 16, 32, generator=g), torch.randn(2, 3, 16, 32, generator=g)
    t = torch.tensor([14, 3])
    with torch.no_grad():
        ref = tiny_unet(x, t, lq)
        for scale in (1.0, 10.0):
            out = student(x, t, lq, scale * torch.randn(2, 1, 16, 32, generator=g))
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_one_rsd_step_updates_student_and_fake_not_teacher(make_config):
    trainer = Trainer(make_config("rsd", optim={"iterations": 1}))
    m = trainer.method
    teacher, student, fake = _params(m.teacher), _params(m.student), _params(m.fake)
    ema = _params(m.ema.shadow)
    head = {k: v for k, v in fake.items() if k.startswith("head.")}
    trainer.run()
    assert not _changed(teacher, m.teacher)
    assert _changed(student, m.student)
    assert _changed(fake, m.fake)
    assert any(not torch.equal(head[k], unwrap(m.fake).state_dict()[k]) for k in head), "discriminator head not trained"
    assert _changed(ema, m.ema.shadow)
    logs = trainer.history[-1]
    assert all(np.isfinite(v) for v in logs.values())
    for key in ("fake/fake_mse", "fake/d_gan", "student/gen", "student/g_gan", "student/total"):
        assert key in logs


@pytest.fixture
def fixed_batch(tiny_unet):
    g = torch.Generator().manual_seed(3)
    B, h = 2, 16
    return {
        "x0": torch.randn(B, 3, h, h, generator=g) * 0.5,
        "z0": torch.randn(B, 3, h, h, generator=g) * 0.5,
        "z_y": torch.randn(B, 3, h, h, generator=g) * 0.5,
        "lq": torch.rand(B, 3, h, h, generator=g) * 2 - 1,
        "t": torch.tensor([3, 14]),
        "eps": torch.randn(B, 3, h, h, generator=g),
        "eps2": torch.randn(B, 3, h, h, generator=g),
    }


def _hand_q(schedule: Schedule, z0, z_y, t, eps):
    eta = torch.tensor(schedule.eta[t.numpy()], dtype=torch.float32).view(-1, 1, 1, 1)
    return z0 + eta * (z_y - z0) + schedule.kappa * eta.sqrt() * eps


def _hand_f(net, schedule: Schedule, z, t, lq):
    in_std = torch.tensor(np.sqrt(schedule.kappa ** 2 * schedule.eta[t.numpy()] + 1), dtype=torch.float32)
    return net(z / in_std.view(-1, 1, 1, 1), t, lq)


def test_generator_loss_matches_hand_computation(tiny_unet, fixed_batch):
    torch.manual_seed(0)
    schedule = Schedule.preset("v1")
    s = ScheduleTensors(schedule, torch.device("cpu"))
    teacher = tiny_unet
    fake = FakeModel(copy.deepcopy(tiny_unet))
    with torch.no_grad():  # make the fake differ from the teacher
        for p in fake.unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    b = fixed_batch
    x0 = b["x0"].clone().requires_grad_(True)
    out = generator_loss(teacher, fake, s, x0, b["z_y"], b["lq"], b["t"], b["eps"], form="dmd",
                         sid_normalization=True, gan_weight=0.0)
    with torch.no_grad():
        z_t = _hand_q(schedule, b["x0"], b["z_y"], b["t"], b["eps"])
        f_real, f_fake = _hand_f(teacher, schedule, z_t, b["t"], b["lq"]), _hand_f(fake, schedule, z_t, b["t"], b["lq"])
        norm = (f_real - b["x0"]).abs().mean((1, 2, 3)) + 1e-8
        expected = 0.5 * (f_fake - f_real).pow(2).mean((1, 2, 3)) / norm
    assert torch.isfinite(out.total)
    torch.testing.assert_close(out.terms["gen"].detach(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.total.detach(), expected.mean(), rtol=1e-5, atol=1e-7)
    # the DMD surrogate's gradient is (f_fake - f_real) / (numel * normaliser * B)
    out.total.backward()
    numel = x0[0].numel()
    grad = (f_fake - f_real) / (numel * norm.view(-1, 1, 1, 1) * x0.shape[0])
    torch.testing.assert_close(x0.grad, grad, rtol=1e-4, atol=1e-9)

    # exact form (i): ||f* - f_phi||^2 + 2 <f* - f_phi, f_phi - x0> (means over C, H, W)
    exact = generator_loss(teacher, fake, s, b["x0"], b["z_y"], b["lq"], b["t"], b["eps"], form="exact",
                           sid_normalization=False)
    diff = f_real - f_fake
    hand = diff.pow(2).mean((1, 2, 3)) + 2 * (diff * (f_fake - b["x0"])).mean((1, 2, 3))
    torch.testing.assert_close(exact.terms["gen"].detach(), hand, rtol=1e-5, atol=1e-7)
    # identity of DISTILLATION.md 1.1: equals ||f* - x0||^2 - ||f_phi - x0||^2
    identity = (f_real - b["x0"]).pow(2).mean((1, 2, 3)) - (f_fake - b["x0"]).pow(2).mean((1, 2, 3))
    torch.testing.assert_close(hand, identity, rtol=1e-4, atol=1e-6)


def test_fake_loss_matches_hand_computation(tiny_unet, fixed_batch):
    torch.manual_seed(0)
    schedule = Schedule.preset("v1")
    s = ScheduleTensors(schedule, torch.device("cpu"))
    fake = FakeModel(copy.deepcopy(tiny_unet), disc_channels=32)
    b = fixed_batch
    out = fake_losses(fake, s, b["x0"], b["z0"], b["z_y"], b["lq"], b["t"], b["eps"], b["eps2"], gan_weight=3e-3)
    with torch.no_grad():
        z_fake = _hand_q(schedule, b["x0"], b["z_y"], b["t"], b["eps"])
        z_real = _hand_q(schedule, b["z0"], b["z_y"], b["t"], b["eps2"])
        pred, logit_fake = fake(z_fake / torch.tensor(schedule.in_std[b["t"].numpy()], dtype=torch.float32).view(-1, 1, 1, 1),
                                b["t"], b["lq"], with_logits=True)
        _, logit_real = fake(z_real / torch.tensor(schedule.in_std[b["t"].numpy()], dtype=torch.float32).view(-1, 1, 1, 1),
                             b["t"], b["lq"], with_logits=True)
    mse = (pred - b["x0"]).pow(2).mean((1, 2, 3))
    d = torch.nn.functional.softplus(logit_fake) + torch.nn.functional.softplus(-logit_real)
    torch.testing.assert_close(out.terms["fake_mse"].detach(), mse, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.terms["d_gan"].detach(), d, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.total.detach(), mse.mean() + 3e-3 * d.mean(), rtol=1e-4, atol=1e-6)


def test_resume_continues_exactly(make_config, tmp_path):
    over = {"optim": {"iterations": 4}, "log": {"checkpoint_every": 2}}
    full = Trainer(make_config("rsd", **over, output_dir=str(tmp_path / "full")))
    full.run()
    first = Trainer(make_config("rsd", **over, output_dir=str(tmp_path / "cut")))
    first.run(max_iterations=2)  # "killed" after the step-2 checkpoint
    ckpt = tmp_path / "cut" / "checkpoints" / "step_0000002.pt"
    assert ckpt.is_file()
    resumed = Trainer(make_config("rsd", **over, output_dir=str(tmp_path / "cut")), resume=ckpt)
    assert resumed.iteration == 2
    out = resumed.run()
    assert [h for h in resumed.history] == [h for h in full.history]  # same loss sequence, bit for bit
    assert out is not None and out.is_file()
    a, b = unwrap(full.method.deployable()).state_dict(), unwrap(resumed.method.deployable()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
