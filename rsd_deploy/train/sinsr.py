"""SinSR distillation (DISTILLATION.md section 2): deterministic teacher ODE, distill + inverse + GT losses."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Dict, List

from torch import nn

from rsd_deploy.errors import RSDError
from rsd_deploy.train.ema import EMA
from rsd_deploy.train.losses import sinsr_losses
from rsd_deploy.train.method import Method, load_network

if TYPE_CHECKING:
    from rsd_deploy.train.loops import Trainer


class SinSRMethod(Method):
    def __init__(self, cfg, trainer: "Trainer") -> None:  # noqa: ANN001 - TrainConfig
        teacher = load_network(cfg.teacher, "teacher")
        if teacher.config.noise_channels:  # type: ignore[union-attr]
            raise RSDError("teacher: is an RSD student (it has a noise input); give the ResShift v1 teacher")
        self.teacher = teacher.to(trainer.device).eval().requires_grad_(False)
        student = copy.deepcopy(self.teacher).requires_grad_(True).train()
        self.ema = EMA(student, cfg.optim.ema)
        self.student = trainer.wrap_ddp(student)
        self.optimizers = {"student": trainer.make_optimizer(student.parameters())}
        self.models = {"student": self.student, "ema": self.ema.shadow}
        w = cfg.sinsr
        self.weights = {"distill": w.distill_weight, "inverse": w.inverse_weight, "gt": w.gt_weight}

    def deployable(self) -> nn.Module:
        return self.ema.shadow

    def step(self, trainer: "Trainer", iteration: int) -> Dict[str, float]:
        opt, acc = self.optimizers["student"], trainer.accumulation
        trainer.set_lr(opt, iteration)
        opt.zero_grad(set_to_none=True)
        logs: Dict[str, List[float]] = {}
        for micro in range(acc):
            b = trainer.next_batch()
            eps = trainer.randn(tuple(b.z_y.shape))
            with trainer.accumulate(self.student, micro), trainer.autocast():
                terms = sinsr_losses(self.student, self.teacher, trainer.sched, b.z_y, b.lq, eps, b.z0, self.weights)
                (terms.total / acc).backward()
            for k, v in terms.terms.items():
                logs.setdefault(f"sinsr/{k}", []).append(float(v.detach().mean()))
            logs.setdefault("sinsr/total", []).append(float(terms.total.detach()))
        logs["grad_norm/student"] = [trainer.clip(self.student)]
        opt.step()
        self.ema.update(self.student)
        return {k: sum(v) / len(v) for k, v in logs.items()}
