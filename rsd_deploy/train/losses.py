"""Losses of ResShift training, RSD distillation and SinSR distillation (DISTILLATION.md).

Latents are (B, 3, h, w) float tensors in the VQ latent space; ``lq`` is the LR image in [-1, 1] at
latent size; ``t`` is a (B,) int64 step index. Per-sample losses are (B,) tensors (mean over C, H, W).
Every network call scales its input by 1 / in_std[t], as the ResShift sampler does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rsd_deploy.models.schedule import Schedule

Net = Callable[..., torch.Tensor]


class ScheduleTensors:
    """The schedule's float64 arrays as float32 tensors on one device, indexable by a (B,) step tensor."""

    eta: torch.Tensor
    sqrt_eta: torch.Tensor
    in_std: torch.Tensor

    def __init__(self, schedule: Schedule, device: torch.device) -> None:
        self.schedule = schedule
        self.T = schedule.steps
        self.kappa = float(schedule.kappa)
        for name in ("eta", "sqrt_eta", "in_std"):
            setattr(self, name, torch.tensor(getattr(schedule, name).copy(), dtype=torch.float32, device=device))

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """(B,) steps -> (B, 1, 1, 1) values of array ``name``."""
        return getattr(self, name)[t].view(-1, 1, 1, 1)


def per_sample_mse(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """(B,) squared error per sample: mean (default) or sum over C, H, W."""
    sq = (a.float() - b.float()).pow(2).flatten(1)
    return sq.sum(1) if reduction == "sum" else sq.mean(1)


def q_sample(s: ScheduleTensors, z0: torch.Tensor, z_y: torch.Tensor, t: torch.Tensor,
             eps: torch.Tensor) -> torch.Tensor:
    """z_t ~ q(z_t | z0, z_y) = z0 + eta_t (z_y - z0) + kappa sqrt(eta_t) eps."""
    return z0 + s.at("eta", t) * (z_y - z0) + s.kappa * s.at("sqrt_eta", t) * eps


def prior(s: ScheduleTensors, z_y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z_T = z_y + kappa sqrt(eta_{T-1}) eps: the inference start, the one sampler's ``Schedule.prior``."""
    return s.schedule.prior(z_y, eps)


def predict_x0(net: Net, s: ScheduleTensors, z_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
               noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x0 prediction of a ResShift-type network from the unscaled latent z_t."""
    x = z_t / s.at("in_std", t)
    return net(x, t, lq) if noise is None else net(x, t, lq, noise)


def uniform_steps(batch: int, low: int, high: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B,) int64 uniform on {low .. high} (inclusive), drawn on the CPU generator for reproducibility."""
    return torch.randint(low, high + 1, (batch,), generator=generator).to(device)


# ------------------------------------------------------------------------------ ResShift
def resshift_loss(net: Net, s: ScheduleTensors, z0: torch.Tensor, z_y: torch.Tensor, lq: torch.Tensor,
                  t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """ResShift's training objective: per-sample ``||f(z_t, y, t) - z0||^2`` (x0 prediction)."""
    return per_sample_mse(predict_x0(net, s, q_sample(s, z0, z_y, t, eps), t, lq), z0)


# ------------------------------------------------------------------------------ GAN head
class DiscriminatorHead(nn.Module):
    """[ours] Small conv head on the fake UNet's bottleneck (output of ``middle_block``).

    (B, C, h/2^(L-1), w/2^(L-1)) features -> (B,) logits: conv3x3 -> GroupNorm -> SiLU -> conv3x3 ->
    GroupNorm -> SiLU -> conv1x1 -> spatial mean. Size-agnostic, so any crop size works.
    """

    def __init__(self, in_channels: int, channels: int = 64) -> None:
        super().__init__()
        groups = 32 if channels % 32 == 0 else 1
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.SiLU(),
            nn.Conv2d(channels, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float()).flatten(1).mean(1)


class PatchDiscriminator(nn.Module):
    """[ours] PatchGAN image discriminator (the pix2pix / VQGAN design) for the autoencoder's decoder.

    (B, 3, H, W) images in [-1, 1] -> (B, 1, ~H/2^L, ~W/2^L) logits, one per overlapping patch: a strided
    4x4 conv, L - 1 more with BatchNorm (channels doubling, at most 8x), a 3x3 conv with BatchNorm and a
    3x3 conv to one logit, LeakyReLU(0.2) between; weights start at N(0, 0.02) as in pix2pix. Real and
    fake images go through in separate calls, so each batch is normalised by its own statistics.
    (A spectral-norm variant was tried first: its logits stayed at 0 and the hinge loss at 2.)
    """

    def __init__(self, channels: int = 32, layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        blocks: List[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        cin = channels
        for level in range(1, layers):
            cout = channels * min(2 ** level, 8)
            blocks += [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.LeakyReLU(0.2)]
            cin = cout
        blocks += [nn.Conv2d(cin, cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.LeakyReLU(0.2),
                   nn.Conv2d(cin, 1, 3, padding=1)]
        self.net = nn.Sequential(*blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: ``mean relu(1 - D(real)) + mean relu(1 + D(fake))`` (scalar)."""
    return F.relu(1 - logits_real.float()).mean() + F.relu(1 + logits_fake.float()).mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_weight: torch.Tensor,
                        limit: float = 1e4) -> torch.Tensor:
    """VQGAN's balance: ``||grad rec|| / ||grad gan||`` at the decoder's last layer (detached, <= limit).

    Makes the adversarial weight a fraction of the reconstruction's pull whatever the losses' scales.
    """
    g_rec = torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_weight, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0, limit).detach()


class FakeModel(nn.Module):
    """The fake ResShift model f_phi (a teacher copy) plus the discriminator head on its bottleneck.

    ``forward(x, t, lq)`` returns the x0 prediction like a UNetSwin; with ``with_logits=True`` it returns
    ``(x0, logits (B,))`` (one call, so DDP sees one forward per backward).
    """

    def __init__(self, unet: nn.Module, disc_channels: int = 64) -> None:
        super().__init__()
        self.unet = unet
        config = getattr(unet, "config")
        bottleneck = int(config.model_channels * config.channel_mult[-1])
        self.head = DiscriminatorHead(bottleneck, disc_channels)
        self._features: Optional[torch.Tensor] = None
        unet.middle_block.register_forward_hook(self._keep)  # type: ignore[union-attr]

    @property
    def config(self):  # noqa: ANN201 - UNetConfig
        return self.unet.config

    def _keep(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        self._features = output

    def forward(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, with_logits: bool = False):  # noqa: ANN201
        out = self.unet(x, t, lq)
        features, self._features = self._features, None
        if not with_logits:
            return out
        return out, self.head(features)


# ------------------------------------------------------------------------------ RSD
@dataclass
class RSDTerms:
    """Per-sample terms (B,) and the weighted total (scalar, before micro-batch averaging)."""

    total: torch.Tensor
    terms: Dict[str, torch.Tensor]


def student_x0(student: Net, s: ScheduleTensors, z0_gt: torch.Tensor, z_y: torch.Tensor, lq: torch.Tensor,
               node_t: torch.Tensor, eps: torch.Tensor, noise_map: torch.Tensor, true_data: bool = True) -> torch.Tensor:
    """The student's x0 at node t_n: input q(z_{t_n} | z0_gt, z_y) (true data) or the prior at T-1."""
    z_in = q_sample(s, z0_gt, z_y, node_t, eps) if true_data else prior(s, z_y, eps)
    return predict_x0(student, s, z_in, node_t, lq, noise_map)


def fake_losses(fake: FakeModel, s: ScheduleTensors, x0_student: torch.Tensor, z0_gt: torch.Tensor,
                z_y: torch.Tensor, lq: torch.Tensor, t: torch.Tensor, eps_fake: torch.Tensor,
                eps_real: torch.Tensor, gan_weight: float) -> RSDTerms:
    """Fake-model step: ResShift loss on (detached) student samples + discriminator loss.

    The discriminator sees the fake UNet's bottleneck at z_t of the student sample ("fake") and of the
    GT latent at the same t ("real"); non-saturating logistic loss [ours].
    """
    x0_student = x0_student.detach()
    B = x0_student.shape[0]
    z_t = q_sample(s, x0_student, z_y, t, eps_fake)
    if gan_weight <= 0:
        fake_mse = per_sample_mse(fake(z_t / s.at("in_std", t), t, lq), x0_student)
        return RSDTerms(fake_mse.mean(), {"fake_mse": fake_mse})
    # one forward over [student sample; GT] at the same t (one DDP forward per backward)
    z_t_real = q_sample(s, z0_gt, z_y, t, eps_real)
    t2 = torch.cat([t, t])
    pred, logits = fake(torch.cat([z_t, z_t_real]) / s.at("in_std", t2), t2, torch.cat([lq, lq]), with_logits=True)
    fake_mse = per_sample_mse(pred[:B], x0_student)
    terms = {"fake_mse": fake_mse}
    total = fake_mse.mean()
    logit_fake, logit_real = logits[:B], logits[B:]
    d_loss = F.softplus(logit_fake) + F.softplus(-logit_real)
    terms["d_gan"] = d_loss
    total = total + gan_weight * d_loss.mean()
    return RSDTerms(total, terms)


def generator_loss(teacher: Net, fake: FakeModel, s: ScheduleTensors, x0_student: torch.Tensor,
                   z_y: torch.Tensor, lq: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, form: str = "dmd",
                   sid_normalization: bool = True, t_power_ten: bool = False, gan_weight: float = 0.0,
                   reduction: str = "mean") -> RSDTerms:
    """RSD generator loss on student samples x0_student (with grad); teacher and fake are frozen.

    form "dmd" (default, [ours] after [3P]): ``0.5 ||x0 - sg(x0 - (f_phi - f*))||^2`` per sample (mean
    over C,H,W), gradient (f_phi - f*) / numel applied to x0 only.
    form "exact": ``||f* - f_phi||^2 + 2 <f* - f_phi, f_phi - x0>`` (means over C,H,W) with the
    gradient through x0 and through z_t (reparameterised), networks frozen.
    Divided per sample by the detached SiD normaliser ``mean |f* - x0| + 1e-8`` when enabled.
    ``reduction`` "mean" (default) or "sum" over C, H, W: the sum is C*H*W times larger (12,288 at a
    64 x 64 latent), which changes the balance against the LPIPS and GAN weights.
    """
    if form == "dmd":
        with torch.no_grad():
            z_t = q_sample(s, x0_student.detach(), z_y, t, eps)
            f_real = predict_x0(teacher, s, z_t, t, lq)
            f_fake = predict_x0(fake, s, z_t, t, lq)
        target = (x0_student - (f_fake - f_real)).detach()
        per = 0.5 * per_sample_mse(x0_student, target, reduction)
    elif form == "exact":
        z_t = q_sample(s, x0_student, z_y, t, eps)
        f_real = predict_x0(teacher, s, z_t, t, lq).float()
        f_fake = predict_x0(fake, s, z_t, t, lq).float()
        diff = f_real - f_fake
        reduce = (lambda x: x.flatten(1).sum(1)) if reduction == "sum" else (lambda x: x.flatten(1).mean(1))
        per = reduce(diff.pow(2)) + 2 * reduce(diff * (f_fake - x0_student.float()))
    else:
        raise ValueError(f"unknown generator loss form {form!r}")
    terms = {"gen_raw": per.detach()}
    if sid_normalization:
        norm = (f_real.detach().float() - x0_student.detach().float()).abs().flatten(1).mean(1) + 1e-8
        per = per / norm
    if t_power_ten:
        per = per * torch.pow(10.0, 1.0 - t.float() / (s.T - 1))
    terms["gen"] = per
    total = per.mean()
    if gan_weight > 0:
        z_t_g = q_sample(s, x0_student, z_y, t, eps)
        _, logit = fake(z_t_g / s.at("in_std", t), t, lq, with_logits=True)
        g_gan = F.softplus(-logit)
        terms["g_gan"] = g_gan
        total = total + gan_weight * g_gan.mean()
    return RSDTerms(total, terms)


# ------------------------------------------------------------------------------ SinSR
def sinsr_coefficients(s: ScheduleTensors, i: int) -> tuple[float, float, float]:
    """(k, m, j) of the deterministic step z_{i-1} = k x0 + m z_i + j z_y (DISTILLATION.md 2.1), i >= 1."""
    eta_prev, eta = float(s.schedule.eta[i - 1]), float(s.schedule.eta[i])
    m = (eta_prev / eta) ** 0.5
    j = eta_prev - (eta_prev * eta) ** 0.5
    k = 1 - eta_prev + (eta_prev * eta) ** 0.5 - m
    return k, m, j


@torch.no_grad()
def deterministic_sample(teacher: Net, s: ScheduleTensors, z_T: torch.Tensor, z_y: torch.Tensor,
                         lq: torch.Tensor) -> torch.Tensor:
    """SinSR's teacher ODE: T deterministic steps from z_T; returns z0_teacher (= the last x0)."""
    z = z_T
    for i in reversed(range(s.T)):
        t = torch.full((z.shape[0],), i, dtype=torch.int64, device=z.device)
        x0 = predict_x0(teacher, s, z, t, lq)
        if i == 0:
            return x0
        k, m, j = sinsr_coefficients(s, i)
        z = k * x0 + m * z + j * z_y
    return z  # pragma: no cover - loop always returns


def sinsr_losses(student: Net, teacher: Net, s: ScheduleTensors, z_y: torch.Tensor, lq: torch.Tensor,
                 eps: torch.Tensor, z_gt: Optional[torch.Tensor], weights: Dict[str, float]) -> RSDTerms:
    """L = w_d ||f(z_T, T-1) - z0_teacher||^2 + w_i ||f(z0_teacher, 0) - z_T||^2 + w_g ||f(sg f(z_gt, 0), T-1) - z_gt||^2.

    The inverse role feeds latents with the t = T-1 input scaling, as SinSR does.
    """
    B = z_y.shape[0]
    last = torch.full((B,), s.T - 1, dtype=torch.int64, device=z_y.device)
    zero = torch.zeros_like(last)
    scale_last = s.in_std[-1]
    z_T = prior(s, z_y, eps)
    z0_teacher = deterministic_sample(teacher, s, z_T, z_y, lq)
    inputs: List[torch.Tensor] = []
    steps: List[torch.Tensor] = []
    roles: List[Tuple[str, torch.Tensor]] = []
    if weights.get("distill", 0):
        inputs.append(z_T)
        steps.append(last)
        roles.append(("distill", z0_teacher))
    if weights.get("inverse", 0):
        inputs.append(z0_teacher)
        steps.append(zero)
        roles.append(("inverse", z_T))
    if weights.get("gt", 0) and z_gt is not None:
        with torch.no_grad():
            bare = getattr(student, "module", student)  # no DDP bookkeeping for this no-grad call
            z_T_gt = bare(z_gt / scale_last, zero, lq)
        inputs.append(z_T_gt)
        steps.append(last)
        roles.append(("gt", z_gt))
    terms: Dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=z_y.device)
    if not roles:
        return RSDTerms(total, terms)
    # one student forward for all roles (DDP sees one forward per backward)
    out = student(torch.cat(inputs) / scale_last, torch.cat(steps), lq.repeat(len(roles), 1, 1, 1))
    for k, (name, target) in enumerate(roles):
        terms[name] = per_sample_mse(out[k * B:(k + 1) * B], target)
        total = total + weights[name] * terms[name].mean()
    return RSDTerms(total, terms)
