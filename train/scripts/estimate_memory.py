"""Estimate the GPU memory one training process needs (published configs, micro-batch 8), on the CPU.

Method: the networks are built on PyTorch's ``meta`` device (shapes and dtypes, no data, no compute),
at their published sizes (UNet ``UNetConfig.full()``, VQ-f4 ``VQConfig()``, LPIPS-Alex), and one
micro-batch of each optimiser phase runs through the library's own loss functions under
``torch.autograd.graph.saved_tensors_hooks``. The bytes of every distinct tensor autograd saves for
the backward pass (parameters excluded) are the phase's activation memory; the peak is the largest
phase. Static memory is counted from the parameter sizes: fp32 weights of every network, gradients
and two AdamW moments of the trained ones, the fp16 VQ weight copy autocast keeps. Not counted: the
CUDA context (~0.5 GB), cuDNN workspaces and allocator fragmentation (typically +10-20 %).

    python train/scripts/estimate_memory.py [--micro-batch 8] [--gt-size 256]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Dict

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

GB = 1024 ** 3


def _bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def saved_activation_bytes(fn: Callable[[], torch.Tensor], params: set) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves while ``fn`` builds its graph."""
    seen: Dict[int, int] = {}
    keep = []

    def pack(t: torch.Tensor):  # noqa: ANN202
        base = t._base if t._base is not None else t
        if id(base) not in params and id(base) not in seen:
            seen[id(base)] = base.numel() * base.element_size()
            keep.append(base)  # alive until the graph is dropped: ids stay unique
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--gt-size", type=int, default=256)
    args = parser.parse_args()
    from rsd_deploy.config import UNetConfig, VQConfig
    from rsd_deploy.models.schedule import Schedule
    from rsd_deploy.models.unet import UNetSwin
    from rsd_deploy.models.vq import VQAutoencoder
    from rsd_deploy.train.losses import (FakeModel, ScheduleTensors, fake_losses, generator_loss, predict_x0,
                                         q_sample, resshift_loss, sinsr_losses)
    from rsd_deploy.train.lpips import LPIPS

    real_autocast = torch.autocast

    class _autocast(real_autocast):  # the VQ disables autocast around its distances; meta has no autocast state
        def __init__(self, device_type: str, *a, **k) -> None:  # noqa: ANN002, ANN003
            super().__init__("cpu" if device_type == "meta" else device_type, *a, **k)

    torch.autocast = _autocast  # type: ignore[misc]
    dev = torch.device("meta")
    B, S = args.micro_batch, args.gt_size
    s = ScheduleTensors(Schedule.preset("v1"), dev)
    with dev:
        teacher = UNetSwin(UNetConfig.full()).requires_grad_(False)
        student = UNetSwin(dataclasses.replace(UNetConfig.full(), noise_channels=1))
        fake = FakeModel(copy.deepcopy(teacher).requires_grad_(True), 64)
        vq = VQAutoencoder(VQConfig()).requires_grad_(False)
        lpips = LPIPS("alex")
        z0, z_y = torch.randn(B, 3, S // 4, S // 4), torch.randn(B, 3, S // 4, S // 4)
        lq, gt = torch.randn(B, 3, S // 4, S // 4), torch.randn(B, 3, S, S)
        t = torch.randint(0, 15, (B,))
        eps, noise = torch.randn_like(z0), torch.randn(B, 1, S // 4, S // 4)
    params = {id(p) for m in (teacher, student, fake, vq, lpips) for p in m.parameters()}
    params |= {id(b) for m in (teacher, student, fake, vq, lpips) for b in m.buffers()}

    def decode(z: torch.Tensor) -> torch.Tensor:  # straight-through quantiser, as Trainer.decode
        with torch.no_grad():
            z_q, _ = vq.quantize(z)
        return vq.decode(z + (z_q - z).detach(), quantize=False)

    def rsd_fake() -> torch.Tensor:
        with torch.no_grad():
            x0 = predict_x0(student, s, q_sample(s, z0, z_y, t, eps), t, lq, noise)
        return fake_losses(fake, s, x0, z0, z_y, lq, t, eps, eps, 3e-3).total

    def rsd_student() -> torch.Tensor:
        x0 = predict_x0(student, s, q_sample(s, z0, z_y, t, eps), t, lq, noise)
        g = generator_loss(teacher, fake, s, x0, z_y, lq, t, eps, "dmd", True, False, 3e-3)
        return g.total + 2.0 * lpips(decode(x0), gt).mean()

    sinsr_student = copy.deepcopy(teacher).requires_grad_(True)
    params |= {id(p) for p in sinsr_student.parameters()}

    def sinsr() -> torch.Tensor:
        return sinsr_losses(sinsr_student, teacher, s, z_y, lq, eps, z0, {"distill": 1, "inverse": 1, "gt": 1}).total

    def resshift() -> torch.Tensor:
        return resshift_loss(sinsr_student, s, z0, z_y, lq, t, eps).mean()

    unet, vq_b, lp = _bytes(teacher), _bytes(vq), _bytes(lpips)
    st, fk = _bytes(student), _bytes(fake)
    fp16_vq = vq_b // 2
    rows = {
        # static: weights of every net + grads and 2 AdamW moments of the trained ones (+ fp16 VQ copy)
        "rsd": (st + fk + unet + st + vq_b + lp + fp16_vq + 3 * (st + fk),  # student, fake, teacher, EMA
                {"fake step": rsd_fake, "student step": rsd_student}),
        "sinsr": (unet * 3 + vq_b + fp16_vq + 3 * unet, {"student step": sinsr}),  # teacher, student, EMA
        "teacher": (unet * 2 + vq_b + fp16_vq + 3 * unet, {"step": resshift}),  # model, EMA
    }
    print(f"micro-batch {B}, HR crop {S} px (latent {S // 4}), fp32 training, meta-device count")
    for name, (static, phases) in rows.items():
        acts = {k: saved_activation_bytes(fn, params) for k, fn in phases.items()}
        peak = max(acts.values())
        detail = ", ".join(f"{k} {v / GB:.1f} GB" for k, v in acts.items())
        print(f"{name:8s} static {static / GB:.1f} GB + activations {peak / GB:.1f} GB ({detail}) "
              f"= {(static + peak) / GB:.1f} GB per process")


if __name__ == "__main__":
    main()
