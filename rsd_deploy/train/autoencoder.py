"""method vq: train the VQ-f4 autoencoder (``VQAutoencoder``) that the other methods take frozen.

Two phases, both [ours] (ResShift trains its VQ-f4 elsewhere, with a GAN, on far more compute):

1. **continuous** (iterations < ``vq_train.quantize_from``): ``D(E(x) + n)`` with small latent noise
   n, so the decoder tolerates the codebook's rounding later. Loss: pixel L1 + L1 on image gradients
   (edges, fine detail) + a decaying L1 pull of the latent towards the 4x4 average-pooled image,
   which makes the latent image-like from the first steps (so z0 = E(HR) and z_y = E(bicubic(LR))
   are close, as the residual shift assumes, and colour rides in the latent). A share of each batch
   is the bicubic-upsampled LR, the images z_y is encoded from.
2. **quantised**: at ``quantize_from`` the latent is standardised (per channel; folded into
   quant_conv / post_quant_conv so the network function is unchanged) and the codebook
   (``n_embed`` x ``embed_dim``, official 8192 x 3) is fitted by k-means on encoder latents; then
   training goes on through the quantiser with a straight-through estimator, a commitment term and
   EMA codebook updates, and codes unused for ``dead_after`` iterations restart at random latents.

LPIPS joins the loss only when local weights are given (``lpips.weights``). With
``vq_train.adversarial_weight`` > 0 a PatchGAN discriminator (hinge loss) trains beside the decoder from
``adversarial_from`` on, and its generator term joins the loss at VQGAN's adaptive balance against the
reconstruction loss: the adversarial term is what rewards detail that pixel losses average away.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rsd_deploy.config import VQConfig
from rsd_deploy.models.vq import AttnBlock, ResnetBlock, VQAutoencoder
from rsd_deploy.train.config import ConfigError
from rsd_deploy.train.losses import PatchDiscriminator, adaptive_gan_weight, hinge_d_loss
from rsd_deploy.train.method import Method, load_network

if TYPE_CHECKING:
    from rsd_deploy.train.config import VQTrainConfig
    from rsd_deploy.train.loops import Trainer

logger = logging.getLogger(__name__)


def vq_config_from(spec: Dict) -> VQConfig:
    try:
        return VQConfig.from_dict({**VQConfig().to_dict(), **spec})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad vq_train.model: config ({exc})") from None


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the forward differences of two image batches (x and y)."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def _nearest(vectors: torch.Tensor, codes: torch.Tensor, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each vector's nearest code, ``chunk`` vectors at a time (bounded memory)."""
    parts = [torch.cdist(vectors[i:i + chunk], codes).min(1) for i in range(0, vectors.shape[0], chunk)]
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


def _seed_codes(vectors: torch.Tensor, k: int, generator: torch.Generator, chunk: int, rounds: int = 8) -> torch.Tensor:
    """k-means++ seeding in at most ``rounds`` rounds (k-means||): each round draws its share of the
    codes with probability proportional to the squared distance to the codes drawn so far, so no
    cluster is left to a random start (with k <= rounds this is plain k-means++)."""
    n = vectors.shape[0]
    codes = vectors[torch.randint(n, (1,), generator=generator)]
    rounds = min(rounds, k)
    for r in range(rounds):
        want = (k * (r + 1)) // rounds - codes.shape[0]
        if want <= 0:
            continue
        weights = _nearest(vectors, codes, chunk)[0].double().pow(2)
        if not weights.sum() > 0:  # every point already is a code: fill with random points
            weights = torch.ones_like(weights)
        pick = torch.multinomial(weights, want, replacement=False, generator=generator)
        codes = torch.cat([codes, vectors[pick]])
    return codes[:k].clone()


@torch.no_grad()
def kmeans(vectors: torch.Tensor, k: int, iters: int, generator: torch.Generator, chunk: int = 32768) -> torch.Tensor:
    """Lloyd's k-means on (N, D) float32 vectors from a k-means++ seeding (``_seed_codes``); empty clusters
    restart at random points. Returns (k, D)."""
    n = vectors.shape[0]
    if n < k:
        raise ConfigError(f"k-means needs at least n_embed={k} latent vectors, got {n}; raise "
                          "vq_train.kmeans_batches or the crop size")
    codes = _seed_codes(vectors, k, generator, chunk)
    for _ in range(iters):
        assign = _nearest(vectors, codes, chunk)[1]
        sums = torch.zeros_like(codes).index_add_(0, assign, vectors)
        counts = torch.bincount(assign, minlength=k).to(vectors.dtype)
        restart = vectors[torch.randint(n, (k,), generator=generator)]
        codes = torch.where((counts == 0)[:, None], restart, sums / counts.clamp(min=1)[:, None])
    return codes


@torch.no_grad()
def standardise_latent(model: VQAutoencoder, latents: torch.Tensor) -> torch.Tensor:
    """Fold a per-channel (z - mean) / std into quant_conv and its inverse into post_quant_conv.

    The autoencoder computes the same function afterwards; its latent has zero mean and unit std
    (the scale ResShift's kappa and eta were set for). ``latents`` (B, D, h, w) are the old latents;
    returns them standardised.
    """
    mean, std = latents.mean((0, 2, 3)), latents.std((0, 2, 3)).clamp(min=1e-4)
    qc, pqc = model.quant_conv, model.post_quant_conv
    qc.weight.div_(std.view(-1, 1, 1, 1))
    qc.bias.sub_(mean).div_(std)
    # post_quant_conv(z') must equal the old post_quant_conv(z' * std + mean)
    pqc.bias.add_((pqc.weight[:, :, 0, 0] * mean.view(1, -1)).sum(1))
    pqc.weight.mul_(std.view(1, -1, 1, 1))
    return (latents - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


# ------------------------------------------------------------------ pooling initialisation
#: value of the constant channels that pin GroupNorm's statistics in the signal groups (see init_as_pooling)
POOLING_CONSTANT = 8.0
#: weights that read the free channels into conv_out start this much smaller than PyTorch's default
FREE_READ_SCALE = 1e-2
#: 1-D taps (outer product per 3x3 kernel) of the linear start of an f4 autoencoder: the two stride-2 encoder convs
#: (input positions 2i, 2i+1, 2i+2) and the two decoder convs after nearest x2 (positions -1, 0, +1), in the
#: order the image meets them. Least-squares fits of the linear path to 128 px hr_photos training crops
#: (train/scripts/fit_pooling_taps.py refits them): 31.31 dB on the zoomed hr_photos validation crops, where
#: 4x4 average pooling with nearest upsampling gives 30.25 (train/RESULTS.md).
ENCODER_TAPS = ((0.481, 0.5, 0.019), (0.579, 0.59, -0.169))
DECODER_TAPS = ((0.024, 0.812, 0.164), (0.174, 0.62, 0.206))
#: the plain start: 2x2 averages and centre copies, i.e. average pooling and nearest upsampling
BOX_ENCODER_TAPS, BOX_DECODER_TAPS = (0.5, 0.5, 0.0), (0.0, 1.0, 0.0)


def linear_start(x: torch.Tensor, encoder_taps: Sequence[Sequence[float]],
                 decoder_taps: Sequence[Sequence[float]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """What :func:`init_as_pooling` makes of the autoencoder, written directly: (latent, reconstruction) of
    (B, 3, H, W) ``x`` with the separable taps per resampling stage, each colour component on its own, the
    encoder's (0, 1, 0, 1) zero pad and the decoder's nearest x2 and zero padding included."""
    def kernel(taps: Sequence[float]) -> torch.Tensor:
        t = torch.as_tensor(taps, dtype=x.dtype)  # a float tensor passes through, gradient and all
        return torch.outer(t, t)[None, None].expand(x.shape[1], 1, 3, 3)

    h = x
    for taps in encoder_taps:
        h = F.conv2d(F.pad(h, (0, 1, 0, 1)), kernel(taps), stride=2, groups=x.shape[1])
    z = h
    for taps in decoder_taps:
        h = F.conv2d(F.interpolate(h, scale_factor=2.0, mode="nearest"), kernel(taps), padding=1, groups=x.shape[1])
    return z, h


def _path_layout(channels: int, groups: int) -> int:
    """Channels per group of a layer on the pooling path; raises unless 3 signal groups of >= 4 fit."""
    per_group = channels // groups
    if groups < 4 or per_group < 4:
        raise ConfigError(f"vq_train.init: pooling needs norm_groups >= 4 and >= 4 channels per group at every "
                          f"level; {channels} channels in {groups} groups do not fit (use init: random or lower "
                          "norm_groups)")
    return per_group


def _path_channels(channels: int, groups: int) -> List[Tuple[int, int, int, int]]:
    """(+s, -s, +K, -K) channel indices of colour component 0, 1, 2: the first four of group 0, 1, 2."""
    n = _path_layout(channels, groups)
    return [(g * n, g * n + 1, g * n + 2, g * n + 3) for g in range(3)]


def _reserve(conv: nn.Conv2d, groups: int) -> List[Tuple[int, int, int, int]]:
    """Zero the rows of ``conv`` that write the three signal groups, and its reads of their +-K channels
    into the free groups (large constants would swamp the free features); returns the output path."""
    out = _path_channels(conv.out_channels, groups)
    n = conv.out_channels // groups
    conv.weight[: 3 * n].zero_()
    conv.bias[: 3 * n].zero_()
    if conv.in_channels >= 4 * groups:  # its input is a path layout too
        for _, _, kp, km in _path_channels(conv.in_channels, groups):
            conv.weight[3 * n:, [kp, km]] = 0.0
    return out


def _pin_norm(norm: nn.GroupNorm, constant: float) -> None:
    """GroupNorm gains that give the signal channels back at unit scale (and +-K as +-1)."""
    n = norm.num_channels // norm.num_groups
    for sp, sm, kp, km in _path_channels(norm.num_channels, norm.num_groups):
        norm.weight[[sp, sm]] = constant * math.sqrt(2.0 / n)
        norm.weight[[kp, km]] = math.sqrt(2.0 / n)
        norm.bias[[sp, sm, kp, km]] = 0.0


def _read_signal(conv: nn.Conv2d, groups: int) -> None:
    """conv_out: colour component g = silu(+s_g) - silu(-s_g) (= s_g exactly); the free channels are read
    with small weights, so they receive gradient and start to matter as they learn."""
    conv.weight.mul_(FREE_READ_SCALE)
    conv.bias.zero_()
    path = _path_channels(conv.in_channels, groups)
    for _, _, kp, km in path:
        conv.weight[:, [kp, km]] = 0.0
    centre = conv.kernel_size[0] // 2
    for g, (sp, sm, _, _) in enumerate(path):
        conv.weight[:, [sp, sm]] = 0.0
        conv.weight[g, sp, centre, centre] = 1.0
        conv.weight[g, sm, centre, centre] = -1.0


def _write_signal(conv: nn.Conv2d, groups: int, constant: float) -> None:
    """conv_in of encoder (RGB) and decoder (latent): component g to (+s, -s) and the bias +-K."""
    path = _reserve(conv, groups)
    centre = conv.kernel_size[0] // 2
    for g, (sp, sm, kp, km) in enumerate(path):
        conv.weight[sp, g, centre, centre] = 1.0
        conv.weight[sm, g, centre, centre] = -1.0
        conv.bias[kp], conv.bias[km] = constant, -constant


def _carry(conv: nn.Conv2d, groups: int, taps: Sequence[float] = (1.0,)) -> None:
    """Each path channel to the same path channel of the next layout, filtered by the separable kernel
    ``taps`` x ``taps`` (1x1 shortcuts: a copy; resampling convs: ENCODER_TAPS, DECODER_TAPS)."""
    out = _reserve(conv, groups)
    src = _path_channels(conv.in_channels, groups)
    t = torch.tensor(taps, dtype=conv.weight.dtype)
    kernel = torch.outer(t, t)
    for o_group, i_group in zip(out, src):
        for o, i in zip(o_group, i_group):
            conv.weight[o, i] = kernel


def _stage_taps(fitted: Sequence[Sequence[float]], box: Sequence[float], stages: int) -> List[Sequence[float]]:
    """The fitted taps where the autoencoder has their number of resampling stages (f4), else the box ones."""
    return list(fitted) if len(fitted) == stages else [box] * stages


@torch.no_grad()
def init_as_pooling(model: VQAutoencoder, constant: float = POOLING_CONSTANT, fitted: bool = True) -> None:
    """Start the autoencoder as a linear downsampler and upsampler of each colour component, latent = the
    filtered and subsampled RGB: ENCODER_TAPS and DECODER_TAPS for an f4 model (``fitted``), else (and for
    other factors) ``decode(encode(x)) = nearest_f(avg_pool_f(x))``. Zero padding darkens the outermost
    2-3 pixels of the fitted start, by up to ~40 % towards grey at the corners.

    From random weights this architecture learns slowly, and absolute colour slowest: GroupNorm removes
    each group's mean and scale, so colour must be rebuilt from channel contrasts. Here each colour
    component instead rides a path of its own through the official architecture, unchanged: channels
    (+s, -s, +K, -K) of a GroupNorm group, where the pair +-s has zero mean, the constants +-K fix the
    group's std (to within 1/sqrt(1 + s^2/K^2)), the norm gain restores s, and silu(s) - silu(-s) = s
    passes it through the activation exactly. Every residual branch and attention output starts at zero
    (so each block is the identity, "zero-init residual"), and the stride-2 and upsampling convs filter the
    path with the taps. Training then adds what the linear start loses. Only the initial weights differ: the
    network, its checkpoint keys and every inference path are the official ones.
    """
    cfg = model.config
    groups = cfg.norm_groups
    for module in model.modules():  # branch outputs to zero; pin the norms that read the stream (not norm2)
        if isinstance(module, ResnetBlock):
            module.conv2.weight.zero_()
            module.conv2.bias.zero_()
            _pin_norm(module.norm1, constant)
        elif isinstance(module, AttnBlock):
            module.proj_out.weight.zero_()
            module.proj_out.bias.zero_()
            _pin_norm(module.norm, constant)
    _pin_norm(model.encoder.norm_out, constant)
    _pin_norm(model.decoder.norm_out, constant)
    enc, dec = model.encoder, model.decoder
    _write_signal(enc.conv_in, groups, constant)
    _write_signal(dec.conv_in, groups, constant)
    stages = len(cfg.ch_mult) - 1
    enc_taps = _stage_taps(ENCODER_TAPS if fitted else (), BOX_ENCODER_TAPS, stages)
    dec_taps = _stage_taps(DECODER_TAPS if fitted else (), BOX_DECODER_TAPS, stages)
    for level in enc.down:  # full resolution first
        for block in level.block:
            if block.nin_shortcut is not None:
                _carry(block.nin_shortcut, groups)
        if hasattr(level, "downsample"):
            _carry(level.downsample.conv, groups, enc_taps.pop(0))
    for level in reversed(dec.up):  # dec.up[0] is the full-resolution level; the latent meets the last first
        for block in level.block:
            if block.nin_shortcut is not None:
                _carry(block.nin_shortcut, groups)
        if hasattr(level, "upsample"):
            _carry(level.upsample.conv, groups, dec_taps.pop(0))
    _read_signal(enc.conv_out, groups)
    _read_signal(dec.conv_out, groups)
    for conv in (model.quant_conv, model.post_quant_conv):
        conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
        conv.bias.zero_()


@torch.no_grad()
def reconstruction_psnr(model: VQAutoencoder, paths: Sequence, quantize: bool = True,
                        device: Optional[torch.device] = None) -> float:
    """Mean 8-bit RGB PSNR of decode(encode(image)) over image files (each cropped to a multiple of the
    downsample factor); ``quantize`` goes through the codebook, as inference does."""
    from rsd_deploy import metrics
    from rsd_deploy.train.data import read_rgb, to_tensor

    scores: List[float] = []
    f = model.config.downsample_factor  # the encoder needs multiples of f
    for path in paths:
        img = to_tensor(read_rgb(path))
        h, w = (img.shape[1] // f) * f, (img.shape[2] // f) * f
        x = img[None, :, :h, :w].to(device or torch.device("cpu"))
        rec = model.decode(model.encode(x), quantize=quantize).clamp(-1, 1)
        scores.append(metrics.psnr(metrics.to_uint8(rec[0].cpu()), metrics.to_uint8(x[0].cpu())))
    return sum(scores) / max(len(scores), 1)


def build_vq(spec: "VQTrainConfig") -> VQAutoencoder:
    """A new autoencoder from ``vq_train``: its model fields and its initialisation (random | pooling)."""
    model = VQAutoencoder(vq_config_from(spec.model))
    if spec.init == "pooling":
        init_as_pooling(model)
    return model


class CodebookState(nn.Module):
    """EMA statistics of the codebook and each code's last use (buffers, so they are checkpointed)."""

    def __init__(self, n_embed: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_sum", torch.zeros(n_embed, dim))
        self.register_buffer("last_used", torch.zeros(n_embed, dtype=torch.long))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))


class VQMethod(Method):
    export_stem = "vq"

    def __init__(self, cfg, trainer: "Trainer") -> None:  # noqa: ANN001 - TrainConfig
        self.cfg, v = cfg, cfg.vq_train
        if cfg.vq:
            model = load_network(cfg.vq, "vq")
            if not isinstance(model, VQAutoencoder):
                raise ConfigError("method vq trains a VQ autoencoder; `vq:` names a UNet checkpoint")
        else:
            model = build_vq(v)
        self.model = model.to(trainer.device).train().requires_grad_(True)
        self.model.quantize.requires_grad_(False)  # the codebook moves by k-means and EMA, not by gradients
        self.stats = CodebookState(model.config.n_embed, model.config.embed_dim).to(trainer.device)
        if v.frozen_latents:  # decoder fine-tuning: the loaded codebook is kept, never refitted
            for frozen in (self.model.encoder, self.model.quant_conv):
                frozen.requires_grad_(False)
            self.stats.fitted.fill_(True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizers = {"model": trainer.make_optimizer(params)}
        self.models = {"model": self.model, "codebook": self.stats}
        self.discriminator: Optional[PatchDiscriminator] = None
        if v.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(v.disc_channels, v.disc_layers).to(trainer.device).train()
            # VQGAN's discriminator betas: a short memory keeps up with a moving generator
            self.optimizers["discriminator"] = torch.optim.AdamW(
                self.discriminator.parameters(), lr=cfg.optim.lr, betas=(0.5, 0.9),
                weight_decay=cfg.optim.weight_decay)
            self.models["discriminator"] = self.discriminator
        self.lpips = None
        if cfg.lpips.weights:
            from rsd_deploy.train.lpips import load_lpips

            lp = load_lpips(cfg.lpips.weights, cfg.lpips.required, net=cfg.lpips.net)
            self.lpips = lp.to(trainer.device) if lp is not None else None
        logger.info("vq: %s, quantised from iteration %d, LPIPS %s", model.config.to_dict(), v.quantize_from,
                    "on" if self.lpips is not None else "off")

    def deployable(self) -> nn.Module:
        return self.model

    def validate(self, trainer: "Trainer") -> Optional[Dict[str, float]]:
        """Reconstruction PSNR (quantised once the codebook is fitted) on the validation HR images."""
        from rsd_deploy.train.data import list_images

        v = self.cfg.val
        if not v.gt_dir:
            return {}
        self.model.eval()
        score = reconstruction_psnr(self.model, list_images([v.gt_dir])[: v.max_images], bool(self.stats.fitted),
                                    trainer.device)
        self.model.train()
        return {"val/recon_psnr": score}

    # ------------------------------------------------------------------ the two phases
    def _images(self, trainer: "Trainer") -> torch.Tensor:
        """A micro-batch of HR crops, the first ``lr_share`` of it replaced by bicubic-upsampled LR."""
        from rsd_deploy.pipeline.image_io import bicubic_x4

        lq, gt = trainer.next_images()
        n_lr = int(round(self.cfg.vq_train.lr_share * gt.shape[0]))
        if n_lr:
            gt = torch.cat([bicubic_x4(lq[:n_lr]).clamp(-1, 1), gt[n_lr:]])
        return gt

    @torch.no_grad()
    def _fit_codebook(self, trainer: "Trainer") -> None:
        v = self.cfg.vq_train
        self.model.eval()
        latents = torch.cat([self.model.encode(self._images(trainer)).float() for _ in range(v.kmeans_batches)])
        self.model.train()
        latents = standardise_latent(self.model, latents)
        d = latents.shape[1]
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, d).cpu()
        codes = kmeans(vectors, self.model.config.n_embed, v.kmeans_iters, trainer.generator)
        self.model.quantize.embedding.weight.copy_(codes.to(trainer.device))
        self.stats.embed_sum.copy_(codes.to(trainer.device))
        self.stats.cluster_size.fill_(1.0)
        self.stats.fitted.fill_(True)
        _, idx = self.model.quantize(latents.to(trainer.device))
        used = torch.unique(idx).numel()
        logger.info("codebook fitted by k-means on %d latent vectors: %d of %d codes in use", vectors.shape[0],
                    used, self.model.config.n_embed)

    @torch.no_grad()
    def _update_codebook(self, z: torch.Tensor, idx: torch.Tensor, iteration: int) -> Dict[str, float]:
        """EMA k-means step on this batch's latents, then restart codes that went unused too long."""
        v, s = self.cfg.vq_train, self.stats
        emb = self.model.quantize.embedding.weight
        n = emb.shape[0]
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
        flat_idx = idx.reshape(-1)
        counts = torch.bincount(flat_idx, minlength=n).float()
        sums = torch.zeros_like(emb).index_add_(0, flat_idx, flat)
        s.cluster_size.mul_(v.codebook_decay).add_(counts, alpha=1 - v.codebook_decay)
        s.embed_sum.mul_(v.codebook_decay).add_(sums, alpha=1 - v.codebook_decay)
        s.last_used[counts > 0] = iteration
        emb.copy_(s.embed_sum / s.cluster_size.clamp(min=1e-5)[:, None])
        dead = (iteration - s.last_used) > v.dead_after
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(flat.shape[0], (n_dead,), device=flat.device)
            emb[dead] = flat[pick]
            s.embed_sum[dead] = flat[pick]
            s.cluster_size[dead] = 1.0
            s.last_used[dead] = iteration
        return {"vq/codes_used": float((counts > 0).sum()), "vq/restarted": float(n_dead)}

    def step(self, trainer: "Trainer", iteration: int) -> Dict[str, float]:
        v, opt, acc = self.cfg.vq_train, self.optimizers["model"], trainer.accumulation
        if iteration >= v.quantize_from and not bool(self.stats.fitted):
            self._fit_codebook(trainer)
            # the latent scale changed under the optimiser's moments: start them afresh
            opt.state.clear()
        quantised = bool(self.stats.fitted)
        trainer.set_lr(opt, iteration)
        opt.zero_grad(set_to_none=True)
        disc = self.discriminator if iteration >= v.adversarial_from else None
        if disc is not None:
            trainer.set_lr(self.optimizers["discriminator"], iteration)
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
        span = max(v.quantize_from, 1)
        guide = v.guide_weight[0] + (v.guide_weight[1] - v.guide_weight[0]) * min(1.0, iteration / span)
        logs: Dict[str, List[float]] = {}
        for micro in range(acc):
            x = self._images(trainer)
            with trainer.autocast():
                with torch.set_grad_enabled(not v.frozen_latents):
                    z = self.model.encode(x).float()
                if quantised:
                    z_q, idx = self.model.quantize(z)
                    z_dec = z + (z_q - z).detach()
                    commit = F.mse_loss(z, z_q.detach())
                else:
                    z_dec = z + v.latent_noise * torch.randn_like(z)
                    commit = z.new_zeros(())
                rec = self.model.decoder(self.model.post_quant_conv(z_dec)).float()
                l1 = (rec - x).abs().mean()
                grad = gradient_l1(rec, x)
                rec_loss = l1 + v.gradient_weight * grad
                if self.lpips is not None:
                    rec_loss = rec_loss + v.lpips_weight * self.lpips(rec.clamp(-1, 1), x).mean()
                loss = rec_loss + v.commitment * commit
                if not quantised and guide > 0:
                    loss = loss + guide * (z - F.avg_pool2d(x, self.model.config.downsample_factor)).abs().mean()
                if disc is not None:
                    disc.requires_grad_(False)  # the generator term moves the decoder only
                    g_gan = -disc(rec).float().mean()
                    balance = adaptive_gan_weight(rec_loss, g_gan, self.model.decoder.conv_out.weight)
                    loss = loss + v.adversarial_weight * balance * g_gan
            (loss / acc).backward()
            if disc is not None:
                disc.requires_grad_(True)
                with trainer.autocast():
                    d_loss = hinge_d_loss(disc(x), disc(rec.detach()))
                (d_loss / acc).backward()
                for key, val in (("vq/g_gan", g_gan), ("vq/d_loss", d_loss), ("vq/gan_balance", balance)):
                    logs.setdefault(key, []).append(float(val.detach()))
            psnr = -10 * torch.log10(((rec.detach().clamp(-1, 1) - x) / 2).pow(2).mean().clamp(min=1e-10))
            for key, val in (("vq/l1", l1), ("vq/gradient_l1", grad), ("vq/commitment", commit), ("vq/psnr", psnr)):
                logs.setdefault(key, []).append(float(val.detach()))
            if quantised and not v.frozen_latents:
                for key, val in self._update_codebook(z, idx, iteration).items():
                    logs.setdefault(key, []).append(val)
        grad_norm = trainer.clip(self.model)
        opt.step()
        if disc is not None:
            logs["grad_norm/discriminator"] = [trainer.clip(disc)]
            self.optimizers["discriminator"].step()
        out = {k: sum(vals) / len(vals) for k, vals in logs.items()}
        out.update({"vq/guide": guide if not quantised else 0.0, "grad_norm/model": grad_norm})
        return out
