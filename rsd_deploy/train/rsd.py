"""RSD distillation (DISTILLATION.md section 1): student, fake model + discriminator head, frozen teacher."""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
from torch import nn

from rsd_deploy.errors import RSDError
from rsd_deploy.train.ema import EMA, unwrap
from rsd_deploy.train.losses import (FakeModel, fake_losses, generator_loss, per_sample_mse, predict_x0, prior, q_sample,
                                     student_x0)
from rsd_deploy.train.method import Method, load_network

if TYPE_CHECKING:
    from rsd_deploy.train.loops import Trainer

logger = logging.getLogger(__name__)


def make_student(teacher: nn.Module, noise_channels: int = 1) -> nn.Module:
    """Teacher copy whose first conv takes ``noise_channels`` more inputs, zero-initialised (bias kept).

    At initialisation the student's output equals the teacher's for any noise map.
    """
    from rsd_deploy.models.unet import UNetSwin

    config = dataclasses.replace(getattr(teacher, "config"), noise_channels=noise_channels)
    student = UNetSwin(config)
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    key = "input_blocks.0.0.weight"
    w = state[key]
    state[key] = torch.cat([w, w.new_zeros(w.shape[0], noise_channels, *w.shape[2:])], dim=1)
    student.load_state_dict(state, strict=True)
    return student.to(next(teacher.parameters()).device)


class RSDMethod(Method):
    """K fake-model updates, then one student update with the generator loss + LPIPS + GAN; EMA of the student."""

    def __init__(self, cfg, trainer: "Trainer") -> None:  # noqa: ANN001 - TrainConfig
        r = cfg.rsd
        dev = trainer.device
        teacher = load_network(cfg.teacher, "teacher")
        if teacher.config.noise_channels:  # type: ignore[union-attr]
            raise RSDError("teacher: is an RSD student (it has a noise input); give the ResShift v1 teacher")
        bad = [n for n in r.student_nodes if not 0 <= n < trainer.schedule.steps]
        if bad:
            raise RSDError(f"rsd.student_nodes {bad} are outside 0..{trainer.schedule.steps - 1}")
        self.cfg = cfg
        self.teacher = teacher.to(dev).eval().requires_grad_(False)
        student = make_student(self.teacher).train()
        fake = FakeModel(copy.deepcopy(self.teacher).requires_grad_(True), r.disc_channels).to(dev).train()
        self.ema = EMA(student, cfg.optim.ema)
        self.student = trainer.wrap_ddp(student)
        self.fake = trainer.wrap_ddp(fake, find_unused=r.gan_weight <= 0)
        self.optimizers = {"student": trainer.make_optimizer(student.parameters()),
                           "fake": trainer.make_optimizer(fake.parameters())}
        self.models = {"student": self.student, "fake": self.fake, "ema": self.ema.shadow}
        self.lpips = None
        if r.lpips_weight > 0:
            from rsd_deploy.train.lpips import load_lpips

            model = load_lpips(cfg.lpips.weights, cfg.lpips.required, net=cfg.lpips.net)
            self.lpips = model.to(dev) if model is not None else None
        self.nodes = torch.tensor(r.student_nodes, dtype=torch.int64)
        logger.info("RSD: K=%d fake updates per student update, student nodes %s, generator loss %s (%s over "
                    "C,H,W), LPIPS-%s %s on the %s output, GAN %.0e", r.fake_updates, r.student_nodes,
                    r.generator_loss, r.loss_reduction, cfg.lpips.net, "on" if self.lpips is not None else "off",
                    r.lpips_input, r.gan_weight)

    def deployable(self) -> nn.Module:
        return self.ema.shadow

    def _student_sample(self, trainer: "Trainer", net: nn.Module, batch,  # noqa: ANN001
                        with_prior: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The student's x0 at random nodes, and (``with_prior``) its one-step output from z_T.

        The prior sample rides in the same forward (2B rows), so DDP sees one forward per backward.
        """
        B = batch.z0.shape[0]
        pick = torch.randint(0, len(self.nodes), (B,), generator=trainer.generator)
        node_t = self.nodes[pick].to(trainer.device)
        eps = trainer.randn(tuple(batch.z0.shape))
        noise_map = trainer.randn((B, 1, *batch.z0.shape[2:]))
        s = trainer.sched
        if not with_prior:
            return student_x0(net, s, batch.z0, batch.z_y, batch.lq, node_t, eps, noise_map, self.cfg.rsd.true_data), None
        z_in = q_sample(s, batch.z0, batch.z_y, node_t, eps) if self.cfg.rsd.true_data else prior(s, batch.z_y, eps)
        # [ours] rsd.lpips_input=prior: LPIPS on what inference produces (z_T at t = T-1), not on the
        # node sample, whose input at small t is already close to the ground truth
        eps_prior = trainer.randn(tuple(batch.z0.shape))
        noise_prior = trainer.randn((B, 1, *batch.z0.shape[2:]))
        last = torch.full((B,), s.T - 1, dtype=torch.int64, device=trainer.device)
        out = predict_x0(net, s, torch.cat([z_in, prior(s, batch.z_y, eps_prior)]), torch.cat([node_t, last]),
                         torch.cat([batch.lq, batch.lq]), torch.cat([noise_map, noise_prior]))
        return out[:B], out[B:]

    def step(self, trainer: "Trainer", iteration: int) -> Dict[str, float]:
        r, s, acc = self.cfg.rsd, trainer.sched, trainer.accumulation
        logs: Dict[str, List[float]] = {}

        def add(name: str, value) -> None:  # noqa: ANN001 - tensor or float
            logs.setdefault(name, []).append(float(value.detach().float().mean()) if torch.is_tensor(value) else value)

        opt_f, opt_s = self.optimizers["fake"], self.optimizers["student"]
        for opt in (opt_f, opt_s):
            trainer.set_lr(opt, iteration)
        bare_student = unwrap(self.student)
        fake_net: FakeModel = self.fake  # type: ignore[assignment]  # DDP-wrapped FakeModel: same call signature
        # 1. K fake updates: student frozen (eval), fake trained on the student's samples
        bare_student.eval()
        self.fake.train()
        for _ in range(r.fake_updates):
            opt_f.zero_grad(set_to_none=True)
            for micro in range(acc):
                batch = trainer.next_batch()
                with torch.no_grad(), trainer.autocast():
                    x0 = self._student_sample(trainer, bare_student, batch)[0].float()
                B = x0.shape[0]
                t = trainer.randint(r.t_min, s.T - 1, B)
                eps_fake, eps_real = trainer.randn(tuple(x0.shape)), trainer.randn(tuple(x0.shape))
                with trainer.accumulate(self.fake, micro), trainer.autocast():
                    terms = fake_losses(fake_net, s, x0, batch.z0, batch.z_y, batch.lq, t, eps_fake, eps_real,
                                        r.gan_weight)
                    (terms.total / acc).backward()
                for k, v in terms.terms.items():
                    add(f"fake/{k}", v)
            add("grad_norm/fake", trainer.clip(self.fake))
            opt_f.step()
        # 2. one student update against the frozen teacher and fake
        bare_fake: FakeModel = unwrap(self.fake).eval().requires_grad_(False)  # type: ignore[assignment]
        self.student.train()
        opt_s.zero_grad(set_to_none=True)
        try:
            for micro in range(acc):
                batch = trainer.next_batch()
                with trainer.accumulate(self.student, micro), trainer.autocast():
                    want_prior = self.lpips is not None and r.lpips_input == "prior"
                    x0, x0_prior = self._student_sample(trainer, self.student, batch, with_prior=want_prior)
                    B = x0.shape[0]
                    t = trainer.randint(r.t_min, s.T - 1, B)
                    eps = trainer.randn(tuple(x0.shape))
                    g = generator_loss(self.teacher, bare_fake, s, x0, batch.z_y, batch.lq, t, eps,
                                       r.generator_loss, r.sid_normalization, r.t_power_ten_weight, r.gan_weight,
                                       reduction=r.loss_reduction)
                    total = g.total
                    for k, v in g.terms.items():
                        add(f"student/{k}", v)
                    if self.lpips is not None:
                        lp = self.lpips(trainer.decode((x0 if x0_prior is None else x0_prior).float()), batch.gt)
                        add("student/lpips", lp)
                        total = total + r.lpips_weight * lp.mean()
                    if r.mse_weight > 0:
                        mse = per_sample_mse(x0, batch.z0)
                        add("student/mse", mse)
                        total = total + r.mse_weight * mse.mean()
                    add("student/total", total)
                    (total / acc).backward()
            add("grad_norm/student", trainer.clip(self.student))
            opt_s.step()
        finally:
            bare_fake.requires_grad_(True).train()
        self.ema.update(self.student)
        return {k: sum(v) / len(v) for k, v in logs.items()}
