"""ResShift teacher training: the plain x0-MSE objective ``||f(z_t, y, t) - z0||^2``, t ~ U{0..T-1}."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List

from torch import nn

from rsd_deploy.config import UNetConfig
from rsd_deploy.train.config import ConfigError
from rsd_deploy.train.ema import EMA
from rsd_deploy.train.losses import resshift_loss
from rsd_deploy.train.method import Method, load_network

if TYPE_CHECKING:
    from rsd_deploy.train.loops import Trainer

logger = logging.getLogger(__name__)


def unet_config_from(spec: Dict[str, Any]) -> UNetConfig:
    """``{"preset": "tiny"|"full", field: value, ...}`` -> UNetConfig (fields override the preset)."""
    spec = dict(spec)
    preset = spec.pop("preset", None)
    base = {"tiny": UNetConfig.tiny(), "full": UNetConfig.full(), None: UNetConfig()}.get(preset)
    if base is None:
        raise ConfigError(f"unet.preset must be tiny or full, got {preset!r}")
    try:
        return UNetConfig.from_dict({**base.to_dict(), **spec})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad unet: config ({exc})") from None


class TeacherMethod(Method):
    def __init__(self, cfg, trainer: "Trainer") -> None:  # noqa: ANN001 - TrainConfig
        if cfg.teacher:
            model = load_network(cfg.teacher, "teacher")
        else:
            from rsd_deploy.models.unet import UNetSwin

            model = UNetSwin(unet_config_from(cfg.unet))
        if model.config.noise_channels:  # type: ignore[union-attr]
            raise ConfigError("method teacher trains a ResShift UNet; the given checkpoint is an RSD student")
        model = model.to(trainer.device).train().requires_grad_(True)
        self.ema = EMA(model, cfg.optim.ema)
        self.model = trainer.wrap_ddp(model)
        self.optimizers = {"model": trainer.make_optimizer(model.parameters())}
        self.models = {"model": self.model, "ema": self.ema.shadow}

    @property
    def one_step(self) -> bool:
        return False

    def deployable(self) -> nn.Module:
        return self.ema.shadow

    def step(self, trainer: "Trainer", iteration: int) -> Dict[str, float]:
        opt, acc, s = self.optimizers["model"], trainer.accumulation, trainer.sched
        trainer.set_lr(opt, iteration)
        opt.zero_grad(set_to_none=True)
        losses: List[float] = []
        for micro in range(acc):
            b = trainer.next_batch()
            t = trainer.randint(0, s.T - 1, b.z0.shape[0])
            eps = trainer.randn(tuple(b.z0.shape))
            with trainer.accumulate(self.model, micro), trainer.autocast():
                loss = resshift_loss(self.model, s, b.z0, b.z_y, b.lq, t, eps).mean()
                (loss / acc).backward()
            losses.append(float(loss.detach()))
        grad_norm = trainer.clip(self.model)
        opt.step()
        self.ema.update(self.model)
        return {"teacher/mse": sum(losses) / len(losses), "grad_norm/model": grad_norm}
