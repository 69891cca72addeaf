"""Build the embedded demo model (rsd_deploy/assets/) from ../shared/data/realset65 on a CPU.

Stages (each writes into --work and is skipped when its output exists, so the script resumes):
  bank     seeded HR crops (128 px) of realset65 + their Real-ESRGAN-style degraded LR (32 px)
  vq       a small VQ-f4 autoencoder trained continuous (L1 + small latent noise), latent rescaled
  kmeans   codebook fitted by k-means on encoder latents (so quantisation error is tiny)
  latents  z0 = E(HR), zy = E(bicubic_x4(LR)) for the whole bank, computed once
  teacher  a tiny ResShift v1 (T=15) UNet trained with the x0-MSE objective on the latents
  package  teacher + VQ written to rsd_deploy/assets/ as safetensors (kind resshift-v1)

The imagenet_val_sr pairs are NOT used for training: they are the evaluation set (train/RESULTS.md).
Usage: python train/scripts/build_default_model.py --work /tmp/default_model [--stages bank,vq,...]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
SHARED = REPO.parent / "shared"
log = logging.getLogger("build_default_model")


def stage_bank(work: Path, count: int, seed: int) -> None:
    from rsd_deploy.train.data import DegradedHRDataset

    ds = DegradedHRDataset([SHARED / "data" / "realset65"], gt_size=128, scale=4, seed=seed, length=count)
    gts, lqs = [], []
    t0 = time.time()
    for i in range(count):
        sample = ds[i]
        gts.append(((sample["gt"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
        lqs.append(((sample["lq"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
        if i % 500 == 0:
            log.info("bank %d/%d (%.0fs)", i, count, time.time() - t0)
    np.savez(work / "bank.npz", gt=np.stack(gts), lq=np.stack(lqs))


VQ_CONFIG = dict(embed_dim=3, n_embed=4096, z_channels=3, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)
UNET_CONFIG = dict(image_size=16, model_channels=32, num_res_blocks=(1, 1, 1), attention_resolutions=(16, 8),
                   channel_mult=(1, 2, 2), num_head_channels=32, swin_embed_dim=64, mlp_ratio=2.0)


def _load_bank(work: Path) -> dict:
    data = np.load(work / "bank.npz")
    return {"gt": torch.from_numpy(data["gt"]), "lq": torch.from_numpy(data["lq"])}


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0


def _vq_batch(bank: dict, gen: torch.Generator, batch: int, crop: int) -> torch.Tensor:
    """HR crops, with a quarter taken from bicubic-upsampled LR so the encoder also sees z_y inputs."""
    import torch.nn.functional as F

    n, _, size, _ = bank["gt"].shape
    idx = torch.randint(n, (batch,), generator=gen)
    out = []
    for k, i in enumerate(idx.tolist()):
        top, left = (torch.randint((size - crop) // 4 + 1, (2,), generator=gen) * 4).tolist()
        if k < batch // 4:
            lq = _to_float(bank["lq"][i:i + 1, :, top // 4:(top + crop) // 4, left // 4:(left + crop) // 4])
            img = F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)[0]
        else:
            img = _to_float(bank["gt"][i, :, top:top + crop, left:left + crop])
        if torch.rand((), generator=gen) < 0.5:
            img = img.flip(-1)
        out.append(img)
    return torch.stack(out)


def stage_vq(work: Path, steps: int, batch: int = 12, crop: int = 32) -> None:
    """Continuous autoencoder: L1 reconstruction + a decaying L1 guide pulling the latent towards the
    4x4 average-pooled image, with N(0, 0.03^2)-noised latents at the decoder.

    The guide makes the latent image-like from the first steps (like VQ-f4's), which a few CPU minutes
    of plain L1 training do not reach (an unguided run stalled at ~16 dB on ImageNet crops).
    """
    import torch.nn.functional as F
    from rsd_deploy.config import VQConfig
    from rsd_deploy.models.vq import VQAutoencoder

    torch.manual_seed(0)
    bank = _load_bank(work)
    model = VQAutoencoder(VQConfig(**VQ_CONFIG))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = 0
    ckpt = work / "vq_train.pt"
    gen = torch.Generator().manual_seed(1)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"]); start = state["step"]
        gen.set_state(state["gen"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)) * 0.95 + 0.05)
    for _ in range(start):
        sched.step()
    t0 = time.time()
    for step in range(start, steps):
        x = _vq_batch(bank, gen, batch, crop)
        z = model.encode(x)
        guide = 0.05 + 0.95 * max(0.0, 1.0 - step / (0.6 * steps))
        z_noisy = z + 0.03 * torch.randn_like(z)
        rec = model.decode(z_noisy, quantize=False)
        l1 = (rec - x).abs().mean()
        loss = l1 + guide * (z - F.avg_pool2d(x, 4)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(); sched.step()
        if step % 20 == 0:
            psnr = -10 * torch.log10(((rec.detach().clamp(-1, 1) - x) / 2).pow(2).mean())
            log.info("vq step %d l1 %.4f psnr %.2f z_std %.3f guide %.2f (%.1fs)", step, l1.item(), psnr.item(),
                     z.std().item(), guide, time.time() - t0)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1, "gen": gen.get_state()}, work / "vq_train.tmp")
            (work / "vq_train.tmp").replace(ckpt)
    torch.save(model.state_dict(), work / "vq_continuous.pt")


def stage_vq_large(work: Path, steps: int, batch: int = 3, crop: int = 128) -> None:
    """Continue the autoencoder on 128 px crops: GroupNorm statistics over small 32 px crops do not carry
    over to whole images (ImageNet 256 px reconstructions lost ~5 dB), larger crops close most of that gap."""
    import torch.nn.functional as F
    from rsd_deploy.config import VQConfig
    from rsd_deploy.models.vq import VQAutoencoder

    torch.manual_seed(21)
    bank = _load_bank(work)
    model = VQAutoencoder(VQConfig(**VQ_CONFIG))
    model.load_state_dict(torch.load(work / "vq_continuous.pt", weights_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    gen = torch.Generator().manual_seed(22)
    t0 = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 3e-4 * (0.1 + 0.9 * (1 - step / steps))
        x = _vq_batch(bank, gen, batch, crop)
        z = model.encode(x)
        rec = model.decode(z + 0.03 * torch.randn_like(z), quantize=False)
        l1 = (rec - x).abs().mean()
        loss = l1 + 0.05 * (z - F.avg_pool2d(x, 4)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            psnr = -10 * torch.log10(((rec.detach().clamp(-1, 1) - x) / 2).pow(2).mean())
            log.info("vq-large step %d l1 %.4f psnr %.2f (%.1fs)", step, l1.item(), psnr.item(), time.time() - t0)
    torch.save(model.state_dict(), work / "vq_large.pt")


def _vq(work: Path, name: str):
    from rsd_deploy.config import VQConfig
    from rsd_deploy.models.vq import VQAutoencoder

    model = VQAutoencoder(VQConfig(**VQ_CONFIG))
    model.load_state_dict(torch.load(work / name, weights_only=True))
    return model.eval()


@torch.no_grad()
def _encode_all(model, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([model.encode(images[i:i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def stage_latents(work: Path, count: int) -> None:
    """Encode HR crops and bicubic-x4 LR crops once; rescale the latent to zero mean, unit std per channel.

    The rescaling is folded into quant_conv (and undone in post_quant_conv), so the autoencoder is
    unchanged as a function while its latent gets a ResShift-friendly scale.
    """
    import torch.nn.functional as F

    model = _vq(work, "vq_large.pt" if (work / "vq_large.pt").exists() else "vq_continuous.pt")
    bank = _load_bank(work)
    gt = _to_float(bank["gt"][:count])
    lq = _to_float(bank["lq"][:count])
    t0 = time.time()
    z0 = torch.cat([_encode_all(model, gt[i:i + 256]) for i in range(0, count, 256)])
    log.info("encoded HR (%.0fs)", time.time() - t0)
    up = torch.cat([F.interpolate(lq[i:i + 256], scale_factor=4, mode="bicubic", align_corners=False)
                    for i in range(0, count, 256)])
    zy = torch.cat([_encode_all(model, up[i:i + 256]) for i in range(0, count, 256)])
    log.info("encoded LR (%.0fs)", time.time() - t0)
    both = torch.cat([z0, zy])
    mean, std = both.mean((0, 2, 3)), both.std((0, 2, 3))
    scale = 1.0 / std
    qc, pqc = model.quant_conv, model.post_quant_conv
    qc.weight.mul_(scale.view(-1, 1, 1, 1))
    qc.bias.copy_((qc.bias - mean) * scale)
    # post_quant_conv(z') must equal post_quant_conv_old(z' * std + mean)
    pqc.bias.add_((pqc.weight[:, :, 0, 0] * mean.view(1, -1)).sum(1))
    pqc.weight.mul_(std.view(1, -1, 1, 1))
    z0, zy = (z0 - mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1), (zy - mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)
    log.info("latent mean %s std %s -> normalised", mean.tolist(), std.tolist())
    torch.save(model.state_dict(), work / "vq_scaled.pt")
    torch.save({"z0": z0, "zy": zy, "lq": bank["lq"][:count]}, work / "latents.pt")


@torch.no_grad()
def stage_kmeans(work: Path, n_codes: int, iters: int = 15, sample: int = 400_000) -> None:
    """Fit the codebook by k-means (k-means++-lite init from a random subset) on training latents."""
    data = torch.load(work / "latents.pt", weights_only=True)
    vecs = torch.cat([data["z0"], data["zy"]]).permute(0, 2, 3, 1).reshape(-1, 3)
    gen = torch.Generator().manual_seed(3)
    vecs = vecs[torch.randperm(len(vecs), generator=gen)[:sample]]
    codes = vecs[torch.randperm(len(vecs), generator=gen)[:n_codes]].clone()
    for it in range(iters):
        assign = torch.cat([torch.cdist(vecs[i:i + 50_000], codes).argmin(1) for i in range(0, len(vecs), 50_000)])
        sums = torch.zeros_like(codes).index_add_(0, assign, vecs)
        counts = torch.bincount(assign, minlength=n_codes).float()
        empty = counts == 0
        codes = torch.where(empty[:, None], vecs[torch.randint(len(vecs), (n_codes,), generator=gen)],
                            sums / counts.clamp(min=1)[:, None])
        err = (vecs - codes[assign]).pow(2).sum(1).mean().sqrt()
        log.info("kmeans iter %d rms error %.4f empty %d", it, err.item(), int(empty.sum()))
    state = torch.load(work / "vq_scaled.pt", weights_only=True)
    state["quantize.embedding.weight"] = codes
    torch.save(state, work / "vq_kmeans.pt")


def stage_vqft(work: Path, steps: int, batch: int = 3, crop: int = 128, source: str = "vq_kmeans.pt",
               target: str = "vq_final.pt", seed: int = 5) -> None:
    """Fine-tune post_quant_conv + decoder on quantised latents (encoder and codebook frozen).

    Latents do not change, so this can run again after the teacher/student are trained (stage vqft2).
    """
    torch.manual_seed(seed)
    model = _vq(work, source)
    params = list(model.post_quant_conv.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.Adam(params, lr=2e-4)
    bank = _load_bank(work)
    gen = torch.Generator().manual_seed(seed + 2)
    t0 = time.time()
    for step in range(steps):
        x = _vq_batch(bank, gen, batch, crop)
        with torch.no_grad():
            z = model.encode(x)
        rec = model.decode(z, quantize=True)
        l1 = (rec - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        l1.backward()
        opt.step()
        if step % 20 == 0:
            psnr = -10 * torch.log10(((rec.detach().clamp(-1, 1) - x) / 2).pow(2).mean())
            log.info("vqft step %d l1 %.4f psnr %.2f (%.0fs)", step, l1.item(), psnr.item(), time.time() - t0)
    torch.save(model.state_dict(), work / target)


def _latent_batch(data: dict, gen: torch.Generator, batch: int, size: int):
    n, _, h, w = data["z0"].shape
    idx = torch.randint(n, (batch,), generator=gen)
    tops = torch.randint(h - size + 1, (batch,), generator=gen)
    lefts = torch.randint(w - size + 1, (batch,), generator=gen)
    sl = [(int(i), int(a), int(b)) for i, a, b in zip(idx, tops, lefts)]
    z0 = torch.stack([data["z0"][i, :, a:a + size, b:b + size] for i, a, b in sl])
    zy = torch.stack([data["zy"][i, :, a:a + size, b:b + size] for i, a, b in sl])
    lq = torch.stack([_to_float(data["lq"][i, :, a:a + size, b:b + size]) for i, a, b in sl])
    return z0, zy, lq


def stage_teacher(work: Path, steps: int, batch: int = 8, size: int = 32, lr: float = 2e-4) -> None:
    """Tiny ResShift v1 teacher: x0-MSE (rsd_deploy.train.losses.resshift_loss), AdamW, EMA 0.999, resumable."""
    from rsd_deploy.config import UNetConfig
    from rsd_deploy.models.schedule import Schedule
    from rsd_deploy.models.unet import UNetSwin
    from rsd_deploy.train.ema import EMA
    from rsd_deploy.train.losses import ScheduleTensors, resshift_loss

    torch.manual_seed(11)
    data = torch.load(work / "latents.pt", weights_only=True)
    model = UNetSwin(UNetConfig(**UNET_CONFIG))
    ema = EMA(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    s = ScheduleTensors(Schedule.preset("v1"), torch.device("cpu"))
    gen = torch.Generator().manual_seed(13)
    ckpt, start = work / "teacher_train.pt", 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"]); ema.load_state_dict(state["ema"]); opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"]); torch.set_rng_state(state["rng"]); start = int(state["step"])
    t0, running = time.time(), 0.0
    for step in range(start, steps):
        for group in opt.param_groups:  # warm-up then cosine to 10 %
            group["lr"] = float(lr * min(1.0, (step + 1) / 100) * (0.55 + 0.45 * np.cos(np.pi * step / steps)))
        z0, zy, lq = _latent_batch(data, gen, batch, size)
        t = torch.randint(0, 15, (batch,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        loss = resshift_loss(model, s, z0, zy, lq, t, eps).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        running = 0.98 * running + 0.02 * loss.item() if step > start else loss.item()
        if step % 25 == 0:
            log.info("teacher step %d loss %.4f (avg %.4f) %.2fs/it", step, loss.item(), running,
                     (time.time() - t0) / (step - start + 1))
        if (step + 1) % 200 == 0 or step + 1 == steps:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "gen": gen.get_state(), "rng": torch.get_rng_state(), "step": step + 1}, work / "teacher_train.tmp")
            (work / "teacher_train.tmp").replace(ckpt)
    torch.save(ema.state_dict(), work / "teacher_ema.pt")
    # the raw weights are the teacher we use: with lr decayed to 10 % they are smooth enough, while an EMA
    # of 0.999 over ~1k steps still holds 0.999^1200 = 30 % of the random initialisation
    torch.save(model.state_dict(), work / "teacher_model.pt")
    _export_safetensors(work)


def _export_safetensors(work: Path) -> None:
    """fp32 teacher + VQ as safetensors for rsd-train / load_checkpoint (train/configs/demo_rsd.yaml)."""
    from rsd_deploy.checkpoint import save_safetensors
    from rsd_deploy.config import UNetConfig
    from rsd_deploy.models.unet import UNetSwin

    teacher = UNetSwin(UNetConfig(**UNET_CONFIG))
    teacher.load_state_dict(torch.load(work / "teacher_model.pt", weights_only=True))
    save_safetensors(teacher, work / "teacher.safetensors", {"rsd_deploy.demo": "1"})
    save_safetensors(_vq(work, "vq_final.pt"), work / "vq.safetensors", {"rsd_deploy.demo": "1"})


def stage_package(work: Path, unet_file: str, kind: str) -> None:
    """Write rsd_deploy/assets/ (fp16 safetensors, ~5 MB) and the info JSON."""
    from rsd_deploy.checkpoint import save_safetensors
    from rsd_deploy.config import UNetConfig
    from rsd_deploy.models.unet import UNetSwin

    assets = REPO / "rsd_deploy" / "assets"
    state = torch.load(work / unet_file, weights_only=True)
    noise_channels = state["input_blocks.0.0.weight"].shape[1] - 6
    unet = UNetSwin(UNetConfig(**UNET_CONFIG, noise_channels=noise_channels))
    unet.load_state_dict(state)
    vq = _vq(work, "vq_final2.pt" if (work / "vq_final2.pt").exists() else "vq_final.pt")
    meta = {"rsd_deploy.demo": "1", "rsd_deploy.model_kind": kind}
    save_safetensors(unet.half(), assets / "demo_unet.safetensors", meta)
    save_safetensors(vq.half(), assets / "demo_vq.safetensors", meta)
    info = json.loads((work / "info.json").read_text()) if (work / "info.json").exists() else {}
    from rsd_deploy.default_model import LABEL

    info.update(kind=kind, label=LABEL, schedule="v1", unet="demo_unet.safetensors", vq="demo_vq.safetensors",
                steps=1 if kind == "rsd" else 15, trained_on="crops of ../shared/data/realset65 (Real-ESRGAN-style "
                "degradation); imagenet_val_sr held out for evaluation",
                recipe="train/scripts/build_default_model.py" + (" + rsd-train train/configs/demo_rsd.yaml" if kind == "rsd" else ""),
                results="train/RESULTS.md", weights_dtype="float16 (loaded as float32)")
    (assets / "demo_model.json").write_text(json.dumps(info, indent=1) + "\n")
    for p in assets.iterdir():
        p.chmod(0o644)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--stages", default="bank")
    parser.add_argument("--bank-size", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--vq-steps", type=int, default=1000)
    parser.add_argument("--vq-large-steps", type=int, default=250)
    parser.add_argument("--latent-count", type=int, default=2000)
    parser.add_argument("--vqft-steps", type=int, default=150)
    parser.add_argument("--vqft2-steps", type=int, default=400)
    parser.add_argument("--teacher-steps", type=int, default=2500)
    parser.add_argument("--package-unet", default="teacher_model.pt")
    parser.add_argument("--package-kind", default="resshift-v1")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    if "bank" in stages and not (args.work / "bank.npz").exists():
        stage_bank(args.work, args.bank_size, args.seed)
    if "vq" in stages and not (args.work / "vq_continuous.pt").exists():
        stage_vq(args.work, args.vq_steps)
    if "vqlarge" in stages and not (args.work / "vq_large.pt").exists():
        stage_vq_large(args.work, args.vq_large_steps)
    if "latents" in stages and not (args.work / "latents.pt").exists():
        stage_latents(args.work, args.latent_count)
    if "kmeans" in stages and not (args.work / "vq_kmeans.pt").exists():
        stage_kmeans(args.work, VQ_CONFIG["n_embed"])
    if "vqft" in stages and not (args.work / "vq_final.pt").exists():
        stage_vqft(args.work, args.vqft_steps)
    if "vqft2" in stages and not (args.work / "vq_final2.pt").exists():
        stage_vqft(args.work, args.vqft2_steps, source="vq_final.pt", target="vq_final2.pt", seed=31)
    if "teacher" in stages and not (args.work / "teacher_model.pt").exists():
        stage_teacher(args.work, args.teacher_steps)
    if "package" in stages:
        stage_package(args.work, args.package_unet, args.package_kind)


if __name__ == "__main__":
    main()
