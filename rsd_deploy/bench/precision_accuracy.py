"""How far a lower-precision path is from torch fp32, at the pipeline output and in the VQ codes.

For every LR image, the reference (torch fp32 backend) and the candidate backend run the same one-step
computation (same bicubic x4, same prior and RSD noise). Reported per candidate:

* ``psnr_db``: PSNR of the 8-bit SR image against the fp32 one (mean over images, and the minimum);
* ``code_flips``: the fraction of latent positions whose nearest VQ code (computed in fp64 on the host
  from the candidate's and the reference's denoiser outputs x0) differs: what the encoder's and the
  denoiser's precision does to the discrete codes;
* ``decoder_max_abs``: the candidate's decoder on the *reference* x0 against the fp32 decoder: a flipped
  code inside the decoder's own quantiser (bf16 distances) shows as a jump of ~0.5 there, bf16 noise
  alone stays near 0.05.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from rsd_deploy.backends.base import Backend
from rsd_deploy.metrics import psnr, to_uint8
from rsd_deploy.pipeline.image_io import bicubic_x4

logger = logging.getLogger(__name__)


def nearest_codes(latent: torch.Tensor, codebook: np.ndarray) -> np.ndarray:
    """(B, D, h, w) latent -> (B, h, w) int64 nearest code indices (squared L2 in float64)."""
    z = latent.detach().double().permute(0, 2, 3, 1).reshape(-1, latent.shape[1]).numpy()
    c = np.asarray(codebook, dtype=np.float64)
    d = (z ** 2).sum(1, keepdims=True) + (c ** 2).sum(1)[None] - 2.0 * z @ c.T
    return d.argmin(1).reshape(latent.shape[0], *latent.shape[2:])


@dataclass
class PathAccuracy:
    """One candidate path against the fp32 reference over a set of images."""

    path: str
    images: int = 0
    psnr_db: List[float] = field(default_factory=list)
    flips: int = 0
    positions: int = 0
    decoder_max_abs: float = 0.0
    output_max_abs: float = 0.0

    @property
    def flip_rate(self) -> float:
        return self.flips / self.positions if self.positions else 0.0

    def to_dict(self) -> dict:
        finite = [p for p in self.psnr_db if np.isfinite(p)]
        d = asdict(self)
        d.update(psnr_mean_db=float(np.mean(finite)) if finite else float("inf"),
                 psnr_min_db=float(min(self.psnr_db)) if self.psnr_db else None, flip_rate=self.flip_rate)
        return d


@dataclass
class _Trace:
    x0: torch.Tensor
    sr: torch.Tensor


def _one_step(backend: Backend, schedule, lq: torch.Tensor, prior: torch.Tensor,
              noise: Optional[torch.Tensor]) -> _Trace:
    z = schedule.prior(backend.encode(bicubic_x4(lq)), prior)
    x0 = backend.denoise(z, int(schedule.T) - 1, lq, noise).float().cpu()
    return _Trace(x0=x0, sr=backend.decode(x0).float().cpu())


@torch.inference_mode()
def compare_paths(reference: Backend, candidates: Dict[str, Backend], schedule, lr_images: Sequence[np.ndarray],
                  codebook: np.ndarray, noise_channels: int, seed: int = 0) -> List[PathAccuracy]:
    """``lr_images``: (1, 3, h, w) float32 in [-1, 1] (h, w multiples of the model's input multiple)."""
    gen = torch.Generator().manual_seed(seed)
    results = {name: PathAccuracy(name) for name in candidates}
    for lr in lr_images:
        lq = torch.from_numpy(np.ascontiguousarray(lr)).float()
        b, _, h, w = lq.shape
        prior = torch.randn((b, 3, h, w), generator=gen)
        noise = torch.randn((b, noise_channels, h, w), generator=gen) if noise_channels else None
        ref = _one_step(reference, schedule, lq, prior, noise)
        ref_codes = nearest_codes(ref.x0, codebook)
        ref_u8 = to_uint8(ref.sr)
        for name, backend in candidates.items():
            got = _one_step(backend, schedule, lq, prior, noise)
            r = results[name]
            r.images += 1
            r.psnr_db.append(psnr(to_uint8(got.sr), ref_u8))
            r.flips += int((nearest_codes(got.x0, codebook) != ref_codes).sum())
            r.positions += int(ref_codes.size)
            r.output_max_abs = max(r.output_max_abs, float((got.sr.clamp(-1, 1) - ref.sr.clamp(-1, 1)).abs().max()))
            dec = backend.decode(ref.x0).float().cpu()
            r.decoder_max_abs = max(r.decoder_max_abs, float((dec - ref.sr).abs().max()))
    for r in results.values():
        logger.info("%s: %.2f dB mean PSNR vs fp32, code flips %d/%d, decoder max abs %.3f", r.path,
                    r.to_dict()["psnr_mean_db"], r.flips, r.positions, r.decoder_max_abs)
    return list(results.values())


def lr_test_images(folder, limit: int, multiple: int) -> List[np.ndarray]:
    """Up to ``limit`` LR images of ``folder`` as (1, 3, h, w) in [-1, 1], centre-cropped to multiples of
    ``multiple`` (the imagenet_val_sr LR images are 64 x 64)."""
    from rsd_deploy.pipeline.image_io import image_files, read_rgb_float

    out = []
    for path in image_files(folder)[:limit]:
        rgb = read_rgb_float(path) * 2.0 - 1.0
        h, w = (rgb.shape[0] // multiple) * multiple, (rgb.shape[1] // multiple) * multiple
        if h == 0 or w == 0:
            continue
        y, x = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
        out.append(np.ascontiguousarray(rgb[y:y + h, x:x + w].transpose(2, 0, 1)[None]).astype(np.float32))
    return out
