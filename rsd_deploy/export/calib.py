"""Real-image data for INT8 calibration and accuracy reports.

INT8 calibration (default) uses LR crops made from the training photos ``shared/data/hr_photos``
(an HR crop 4x the LR size, area-downscaled x4): never the test sets. The accuracy report (an
evaluation) uses ``shared/data/imagenet_val_sr/lq`` and crops of ``shared/data/realset65``. Each graph
is calibrated on the inputs it really sees in the pipeline: the encoder on bicubic-x4 LR crops, the
denoiser on the prior sample over the fp32 encoder's z_y (real prior noise)
(and the RSD noise map) and the LR crop, the decoder on the fp32 denoiser's x0.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rsd_deploy.bundle.specs import ExportSpec, Role, graph_specs
from rsd_deploy.errors import ConfigError
from rsd_deploy.pipeline.image_io import SUPPORTED_EXTENSIONS, image_files, read_rgb_float

logger = logging.getLogger(__name__)



def shared_data_dir() -> Optional[Path]:
    """``shared/data`` beside the repository (or working directory), if present."""
    here = Path(__file__).resolve()
    for base in [*here.parents, Path.cwd(), *Path.cwd().parents]:
        cand = base / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def default_calibration_dirs() -> List[Path]:
    data = shared_data_dir()
    if data is None:
        return []
    return [d for d in (data / "imagenet_val_sr" / "lq", data / "realset65") if d.is_dir()]


def default_hr_calibration_dir() -> Optional[Path]:
    """``shared/data/hr_photos`` (the training set) if present: the default INT8 calibration source."""
    data = shared_data_dir()
    if data is None or not (data / "hr_photos").is_dir():
        return None
    return data / "hr_photos"


def list_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise ConfigError(f"calibration folder {folder} does not exist; pass --calib DIR with LR images")
    files = image_files(folder)
    if not files:
        raise ConfigError(f"calibration folder {folder} has no images ({', '.join(SUPPORTED_EXTENSIONS)})")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) float32 RGB in [-1, 1] (grey -> 3 channels, alpha dropped)."""
    return read_rgb_float(path) * 2.0 - 1.0


def lr_crops(folders: Sequence[Path], size: int, count: int, seed: int = 0) -> List[np.ndarray]:
    """``count`` LR crops (1, 3, size, size) float32 in [-1, 1], taken round-robin from the folders.

    A deterministic crop position per image (``seed``); images smaller than ``size`` are skipped.
    """
    rng = np.random.default_rng(seed)
    per_folder = [list_images(Path(f)) for f in folders]
    crops: List[np.ndarray] = []
    index = 0
    while len(crops) < count and any(index < len(files) for files in per_folder):
        for files in per_folder:
            if index >= len(files) or len(crops) >= count:
                continue
            img = read_rgb(files[index])
            h, w = img.shape[:2]
            if h < size or w < size:
                continue
            y = int(rng.integers(0, h - size + 1))
            x = int(rng.integers(0, w - size + 1))
            crops.append(np.ascontiguousarray(img[y:y + size, x:x + size].transpose(2, 0, 1)[None]))
        index += 1
    if not crops:
        raise ConfigError(f"no image of at least {size}x{size} px in {', '.join(map(str, folders))}; "
                          f"add larger images or lower --opt-shape")
    return crops


def hr_lr_crops(folder: Path, size: int, count: int, seed: int = 0, scale: int = 4) -> List[np.ndarray]:
    """``count`` LR crops (1, 3, size, size) float32 in [-1, 1] made from HR photos: one random
    ``scale * size`` crop per image (round-robin over the images, as many passes as needed), area-downscaled
    x``scale`` (the clean LR a camera at 1/scale resolution would see). Only one photo is decoded at a time."""
    import cv2

    files = list_images(Path(folder))
    rng = np.random.default_rng(seed)
    hr = scale * size
    crops: List[np.ndarray] = []
    usable = list(files)
    while len(crops) < count and usable:
        for path in list(usable):
            if len(crops) >= count:
                break
            img = read_rgb_float(path)
            h, w = img.shape[:2]
            if h < hr or w < hr:
                usable.remove(path)
                continue
            y = int(rng.integers(0, h - hr + 1))
            x = int(rng.integers(0, w - hr + 1))
            lr = cv2.resize(img[y:y + hr, x:x + hr], (size, size), interpolation=cv2.INTER_AREA)
            crops.append(np.ascontiguousarray((lr * 2.0 - 1.0).transpose(2, 0, 1)[None]).astype(np.float32))
            del img
    if not crops:
        raise ConfigError(f"no image of at least {hr}x{hr} px in {folder}; add larger photos or pass --calib DIR "
                          f"with LR images")
    return crops


def synthetic_crops(size: int, count: int, seed: int = 0) -> List[np.ndarray]:
    """Smooth random LR images (1, 3, size, size) in [-1, 1]: bicubic-upsampled 4x4 colour grids plus
    mild noise. Only for the accuracy report on machines without real images (never for INT8)."""
    gen = torch.Generator().manual_seed(seed)
    crops = []
    for _ in range(count):
        grid = torch.rand(1, 3, 4, 4, generator=gen) * 1.6 - 0.8
        img = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
        img = img + 0.05 * torch.randn(img.shape, generator=gen)
        crops.append(img.clamp(-1, 1).numpy().astype(np.float32))
    return crops


def bicubic_x4(lr: torch.Tensor) -> torch.Tensor:
    """The pipeline's host-side upsampling (PyTorch bicubic, a = -0.75, no antialias, no clamp)."""
    return F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False, antialias=False)


@dataclass
class PipelineSample:
    """All inputs and fp32 PyTorch outputs of one image through the one-step pipeline (numpy, batch 1)."""

    lq: np.ndarray
    image: np.ndarray  # bicubic-x4 LR: the encoder input
    z_y: np.ndarray
    prior_noise: np.ndarray  # eps of z_T = z_y + prior_std * eps
    prior_std: float
    noise: Optional[np.ndarray]
    x0: np.ndarray
    sr: np.ndarray  # decoder output, not clamped
    specs: Dict[str, ExportSpec]  # the graphs' I/O (names by role)

    def z_t(self, z_y: Optional[np.ndarray] = None) -> np.ndarray:
        """The denoiser input: the prior sample over this sample's z_y, or over another encoder's."""
        base = self.z_y if z_y is None else z_y
        return (base + np.float32(self.prior_std) * self.prior_noise).astype(np.float32)

    def feeds(self, graph: str, z_y: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """{input name: array} of ``graph`` (the denoiser's z_t formed over ``z_y`` when given)."""
        by_role = {"encoder": {Role.LR_UPSAMPLED: self.image},
                   "denoiser": {Role.Z_T: self.z_t(z_y), Role.LQ: self.lq, Role.STUDENT_NOISE: self.noise},
                   "decoder": {Role.X0: self.x0}}[graph]
        return self.specs[graph].feeds(by_role)

    def reference(self, graph: str) -> np.ndarray:
        return {"encoder": self.z_y, "denoiser": self.x0, "decoder": self.sr}[graph]


@torch.inference_mode()
def reference_samples(modules: Dict[str, torch.nn.Module], crops: Sequence[np.ndarray], noise_channels: int,
                      seed: int = 0) -> List[PipelineSample]:
    """Run the fp32 PyTorch graph modules (EncoderGraph, DenoiserGraph, DecoderGraph) on each crop."""
    gen = torch.Generator().manual_seed(seed)
    denoiser = modules["denoiser"]
    prior_std = float(denoiser.constants.prior_std)  # type: ignore[union-attr]
    specs = graph_specs(int(denoiser.unet.config.input_multiple), noise_channels)  # type: ignore[union-attr]
    samples = []
    for lr in crops:
        lq = torch.from_numpy(lr)
        image = bicubic_x4(lq)
        z_y = modules["encoder"](image)
        prior = torch.randn(z_y.shape, generator=gen)
        noise = torch.randn((z_y.shape[0], noise_channels, *z_y.shape[2:]), generator=gen) if noise_channels else None
        z_t = z_y + prior_std * prior
        x0 = denoiser(z_t, lq, noise) if noise is not None else denoiser(z_t, lq)
        sr = modules["decoder"](x0)
        samples.append(PipelineSample(lq=lr, image=image.numpy(), z_y=z_y.numpy(), prior_noise=prior.numpy(),
                                      prior_std=prior_std, noise=None if noise is None else noise.numpy(),
                                      x0=x0.numpy(), sr=sr.numpy(), specs=specs))
    return samples
