"""Training data: HR folders degraded on the fly, or paired LR/HR folders; seeded and resumable.

Every sample is a dict ``{"lq": (3, h, w), "gt": (3, s*h, s*w)}`` of float32 tensors in [-1, 1]
(RGB). The randomness of sample ``i`` in epoch ``e`` comes from ``numpy.random.default_rng((seed,
e, i))``, so results do not depend on the number of DataLoader workers, and a resumed run sees the
same batches as an uninterrupted one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rsd_deploy.errors import RSDError
from rsd_deploy.pipeline.image_io import image_files, read_rgb_float
from rsd_deploy.train.degradation import DegradationConfig, degrade

logger = logging.getLogger(__name__)



def list_images(folders: Sequence[str | Path]) -> List[Path]:
    """All image files (sorted) directly inside the given folders; raises if none is found."""
    files: List[Path] = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise RSDError(f"data folder {path} does not exist; fix data.hr_dirs / data.lq_dir / data.gt_dir")
        files.extend(image_files(path))
    if not files:
        raise RSDError(f"no images (png/jpg/bmp/webp/tif) in {', '.join(map(str, folders))}; point the config at image folders")
    return files


read_rgb = read_rgb_float  # (H, W, 3) float32 RGB in [0, 1]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) [0, 1] -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) * 2.0 - 1.0


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h >= size and w >= size:
        return img
    # reflect needs pad < side; fall back to edge replication for tiny images
    pads = ((0, max(size - h, 0)), (0, max(size - w, 0)), (0, 0))
    if pads[0][1] < h and pads[1][1] < w:
        return np.pad(img, pads, mode="reflect")
    return np.pad(img, pads, mode="edge")


class _SeededDataset(Dataset):
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, index))


class DegradedHRDataset(_SeededDataset):
    """Random HR crops (with h-flip) and their LR made by :func:`degrade` on the fly.

    Images are decoded once and kept in memory (the shared data sets are small); pass
    ``cache=False`` for large folders.
    """

    def __init__(self, hr_dirs: Sequence[str | Path], gt_size: int = 256, scale: int = 4, hflip: bool = True,
                 degradation: DegradationConfig = DegradationConfig(), seed: int = 0, cache: bool = True,
                 length: Optional[int] = None) -> None:
        if gt_size % scale:
            raise RSDError(f"data.gt_size {gt_size} must be a multiple of the scale {scale}")
        self.files = list_images(hr_dirs)
        self.gt_size, self.scale, self.hflip, self.seed = gt_size, scale, hflip, seed
        self.degradation = degradation
        self.length = length or len(self.files)
        self._cache: Dict[int, np.ndarray] = {}
        self.cache = cache

    def __len__(self) -> int:
        return self.length

    def _image(self, file_index: int) -> np.ndarray:
        if file_index in self._cache:
            return self._cache[file_index]
        img = read_rgb(self.files[file_index])
        if self.cache:
            self._cache[file_index] = img
        return img

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(index)
        img = _pad_to(self._image(index % len(self.files)), self.gt_size)
        h, w = img.shape[:2]
        top, left = int(rng.integers(h - self.gt_size + 1)), int(rng.integers(w - self.gt_size + 1))
        gt = img[top:top + self.gt_size, left:left + self.gt_size]
        if self.hflip and rng.random() < 0.5:
            gt = gt[:, ::-1]
        gt = np.ascontiguousarray(gt)
        lq = degrade(gt, rng, self.degradation)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt)}


class PairedDataset(_SeededDataset):
    """LR/HR pairs with the same file names in two folders; aligned random crops and h-flip.

    ``lq_size=None`` keeps whole images (validation; all images must then share one size per batch).
    """

    def __init__(self, lq_dir: str | Path, gt_dir: str | Path, lq_size: Optional[int] = 64, scale: int = 4,
                 hflip: bool = True, seed: int = 0) -> None:
        self.lq_files = list_images([lq_dir])
        gt_dir = Path(gt_dir)
        missing = [p.name for p in self.lq_files if not (gt_dir / p.name).exists()]
        if missing:
            raise RSDError(f"{len(missing)} LR images have no HR partner in {gt_dir} (e.g. {missing[0]}); "
                           "paired folders need identical file names")
        self.gt_files = [gt_dir / p.name for p in self.lq_files]
        self.lq_size, self.scale, self.hflip, self.seed = lq_size, scale, hflip, seed

    def __len__(self) -> int:
        return len(self.lq_files)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(index)
        lq, gt = read_rgb(self.lq_files[index]), read_rgb(self.gt_files[index])
        s = self.scale
        if gt.shape[0] != lq.shape[0] * s or gt.shape[1] != lq.shape[1] * s:
            raise RSDError(f"{self.gt_files[index].name}: HR {gt.shape[1]}x{gt.shape[0]} is not {s}x the LR "
                           f"{lq.shape[1]}x{lq.shape[0]}; fix the pair or data.scale")
        if self.lq_size is not None:
            size = self.lq_size
            lq, gt = _pad_to(lq, size), _pad_to(gt, size * s)
            top, left = int(rng.integers(lq.shape[0] - size + 1)), int(rng.integers(lq.shape[1] - size + 1))
            lq = lq[top:top + size, left:left + size]
            gt = gt[top * s:(top + size) * s, left * s:(left + size) * s]
            if self.hflip and rng.random() < 0.5:
                lq, gt = lq[:, ::-1], gt[:, ::-1]
        return {"lq": to_tensor(np.ascontiguousarray(lq)), "gt": to_tensor(np.ascontiguousarray(gt))}


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, sharded over DDP ranks, that can start mid-epoch.

    Rank r takes positions r, r + world, ... of the permutation (padded by wrapping so every rank
    gets the same count). ``start`` skips the first ``start`` indices of this rank's shard.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def per_rank(self) -> int:
        return -(-self.size // self.world)

    def __len__(self) -> int:
        return self.per_rank() - self.start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        perm = torch.randperm(self.size, generator=g).tolist()
        total = self.per_rank() * self.world
        perm = (perm * (total // self.size + 1))[:total]
        return iter(perm[self.rank::self.world][self.start:])


@dataclass
class LoaderState:
    """Where the batch stream is: epoch and samples already consumed in it (per rank)."""

    epoch: int = 0
    consumed: int = 0


class BatchStream:
    """Endless batches over epochs that remembers its position for exact resume.

    ``next()`` returns a dict of batched tensors. ``state`` / ``load_state`` save and restore the
    position; batches never straddle epochs (the last partial batch of an epoch is dropped).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 workers: int = 0) -> None:
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers
        self.sampler = ResumableSampler(len(dataset), seed, rank, world)  # type: ignore[arg-type]
        if self.sampler.per_rank() < batch_size:
            raise RSDError(f"the data set has {len(dataset)} samples, fewer than one batch of {batch_size} per "  # type: ignore[arg-type]
                           "process; lower the batch size or set data.length")
        self.state = LoaderState()
        self._iter: Optional[Iterator] = None

    def load_state(self, state: LoaderState) -> None:
        self.state = LoaderState(state.epoch, state.consumed)
        self._iter = None

    def _start_epoch(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.state.epoch)  # type: ignore[attr-defined]
        self.sampler.set_position(self.state.epoch, self.state.consumed)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
                            num_workers=self.workers, persistent_workers=False)
        self._iter = iter(loader)

    def next(self) -> Dict[str, torch.Tensor]:
        for _ in range(2):
            if self._iter is None:
                self._start_epoch()
            try:
                batch = next(self._iter)  # type: ignore[arg-type]
                self.state.consumed += self.batch_size
                return batch
            except StopIteration:
                self.state = LoaderState(self.state.epoch + 1, 0)
                self._iter = None
        raise RSDError("the data stream produced no batch; the data set is too small for the batch size")
