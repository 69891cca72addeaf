"""Training data: HR folders degraded on the fly, or paired LR/HR folders; seeded and resumable.

Every sample is a dict ``{"lq": (3, h, w), "gt": (3, s*h, s*w)}`` of float32 tensors in [-1, 1]
(RGB). The sampler hands the datasets ``(epoch, i)`` keys, and the randomness of sample ``i`` in
epoch ``e`` comes from ``numpy.random.default_rng((seed, e, i))``, so results do not depend on the
number of DataLoader workers (which persist across epochs), and a resumed run sees the same batches
as an uninterrupted one.

HR folders are listed recursively (an ImageNet train tree: one folder per class). Each epoch maps
its ``data.length`` samples onto a fresh seeded permutation of *all* files, so a length below the
file count draws a different subset of the whole set every epoch (not the first N sorted files).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rsd_deploy.errors import RSDError
from rsd_deploy.pipeline.image_io import image_files, read_rgb_float
from rsd_deploy.train.degradation import DegradationConfig, degrade

logger = logging.getLogger(__name__)



def list_images(folders: Sequence[str | Path], recursive: bool = False) -> List[Path]:
    """All image files (sorted) inside the given folders (and their sub-folders with ``recursive``)."""
    files: List[Path] = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise RSDError(f"data folder {path} does not exist; fix data.hr_dirs / data.lq_dir / data.gt_dir")
        files.extend(image_files(path, recursive=recursive))
    if not files:
        raise RSDError(f"no images (png/jpg/bmp/webp/tif) in {', '.join(map(str, folders))}; point the config at image folders")
    return files


def read_split(path: str | Path, part: str) -> List[str]:
    """The file names of one part ("train" / "val") of a split file ``{"train": [...], "val": [...]}``."""
    import json

    try:
        names = json.loads(Path(path).read_text())[part]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RSDError(f"split file {path} has no {part!r} list of file names ({type(exc).__name__}); fix data.hr_split")
    if not isinstance(names, list) or not names:
        raise RSDError(f"split file {path}: {part!r} must be a non-empty list of file names")
    return [str(n) for n in names]


def select_files(files: Sequence[Path], names: Sequence[str]) -> List[Path]:
    """The files whose names are listed (all must exist: a split that silently shrank would mislead)."""
    by_name = {f.name: f for f in files}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise RSDError(f"{len(missing)} file(s) of the split are not in the data folders (first: {missing[0]}); "
                       "fix data.hr_split or data.hr_dirs")
    return [by_name[n] for n in names]


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


Key = Union[int, Tuple[int, int]]


class _SeededDataset(Dataset):
    """Items are addressed by ``(epoch, i)`` (what :class:`ResumableSampler` yields) or by a plain ``i``
    in the epoch set with :meth:`set_epoch` (direct indexing)."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def split(self, key: Key) -> Tuple[int, int]:
        if isinstance(key, (tuple, list)):
            return int(key[0]), int(key[1])
        return self.epoch, int(key)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, epoch, index))


class ImageCache:
    """A bounded cache of decoded images as uint8 (one per DataLoader worker process).

    Images whose float pixels are not exactly k/255 (16-bit files) are not cached, so a run gives
    the same samples with the cache on or off. ``max_bytes = 0`` disables it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0
        self._items: Dict[int, np.ndarray] = {}

    def get(self, key: int) -> Optional[np.ndarray]:
        hit = self._items.get(key)
        return None if hit is None else hit.astype(np.float32) / 255.0

    def put(self, key: int, img: np.ndarray) -> None:
        if self.used + img.size > self.max_bytes:
            return
        u8 = np.round(img * 255.0).astype(np.uint8)
        if np.array_equal(u8.astype(np.float32) / 255.0, img):
            self._items[key] = u8
            self.used += u8.nbytes


def rescale_square(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """ResShift's ``rescale_gt``: a random square of side max(min(h, w), size) (reflect-padded when the
    image is smaller than ``size``), resized to ``size`` x ``size`` with area interpolation."""
    side = max(min(img.shape[:2]), size)
    img = _pad_to(img, side)
    h, w = img.shape[:2]
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    square = img[top:top + side, left:left + side]
    if side == size:
        return square
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


class DegradedHRDataset(_SeededDataset):
    """HR crops (with h-flip) and their LR made by :func:`degrade` on the fly.

    ``rescale_gt=True`` (ResShift's setting): the whole short side, resized to ``gt_size``;
    ``False``: a native-resolution random ``gt_size`` crop. ``cache_bytes`` bounds the optional
    uint8 decoded-image cache (off by default: at ImageNet scale a cache cannot hold the set).
    """

    def __init__(self, hr_dirs: Sequence[str | Path], gt_size: int = 256, scale: int = 4, hflip: bool = True,
                 degradation: DegradationConfig = DegradationConfig(), seed: int = 0, cache_bytes: int = 0,
                 length: Optional[int] = None, rescale_gt: bool = True,
                 only: Optional[Sequence[str]] = None, zoom_range: Tuple[float, float] = (1.0, 1.0)) -> None:
        if gt_size % scale:
            raise RSDError(f"data.gt_size {gt_size} must be a multiple of the scale {scale}")
        self.files = list_images(hr_dirs, recursive=True)
        if only is not None:
            self.files = select_files(self.files, only)
        self.gt_size, self.scale, self.hflip, self.seed = gt_size, scale, hflip, seed
        self.degradation, self.rescale_gt, self.zoom_range = degradation, rescale_gt, zoom_range
        self.length = length or len(self.files)
        self.cache = ImageCache(cache_bytes)
        self._order: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def __len__(self) -> int:
        return self.length

    def file_index(self, epoch: int, index: int) -> int:
        """Which file sample ``index`` of ``epoch`` reads: position ``index`` of the epoch's permutation."""
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng((self.seed, epoch, 0x5EED)).permutation(len(self.files)))
        return int(self._order[1][index % len(self.files)])  # type: ignore[index]

    def _image(self, file_index: int) -> np.ndarray:
        img = self.cache.get(file_index)
        if img is None:
            img = read_rgb(self.files[file_index])
            self.cache.put(file_index, img)
        return img

    def __getitem__(self, key: Key) -> Dict[str, torch.Tensor]:
        epoch, index = self.split(key)
        rng = self.rng(epoch, index)
        img = self._image(self.file_index(epoch, index))
        if self.hflip and rng.random() < 0.5:
            img = img[:, ::-1]
        if self.rescale_gt:
            gt = rescale_square(img, self.gt_size, rng)
        else:
            lo, hi = self.zoom_range
            side = self.gt_size if lo == hi == 1.0 else int(round(self.gt_size / rng.uniform(lo, hi)))
            img = _pad_to(img, side)
            h, w = img.shape[:2]
            top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
            gt = img[top:top + side, left:left + side]
            if side != self.gt_size:
                gt = cv2.resize(np.ascontiguousarray(gt), (self.gt_size, self.gt_size), interpolation=cv2.INTER_AREA)
        gt = np.ascontiguousarray(gt, dtype=np.float32)
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

    def __getitem__(self, key: Key) -> Dict[str, torch.Tensor]:
        epoch, index = self.split(key)
        rng = self.rng(epoch, index)
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


class ResumableSampler(Sampler[Tuple[int, int]]):
    """Seeded per-epoch permutation, sharded over DDP ranks, that can start mid-epoch.

    Rank r takes positions r, r + world, ... of the permutation (padded by wrapping so every rank
    gets the same count). ``start`` skips the first ``start`` indices of this rank's shard. Yields
    ``(epoch, index)`` so persistent DataLoader workers need no epoch update.
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

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        perm = torch.randperm(self.size, generator=g).tolist()
        total = self.per_rank() * self.world
        perm = (perm * (total // self.size + 1))[:total]
        epoch = self.epoch
        return iter([(epoch, i) for i in perm[self.rank::self.world][self.start:]])


@dataclass
class LoaderState:
    """Where the batch stream is: epoch and samples already consumed in it (per rank)."""

    epoch: int = 0
    consumed: int = 0


class PairQueue:
    """Real-ESRGAN's training-pair pool (ResShift uses it too): batches are swapped with a shuffled pool.

    Until ``size`` pairs are stored a batch is stored and also returned; then the pool is shuffled,
    its first B pairs are returned and replaced by the new batch. This mixes degradations across
    batches. ``state_dict`` holds the pool and the shuffle generator, for exact resume.
    """

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if size % batch_size:
            raise RSDError(f"data.queue_size {size} must be a multiple of the per-process micro-batch {batch_size}")
        self.size, self.batch_size = size, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.pool: Dict[str, torch.Tensor] = {}
        self.filled = 0

    def exchange(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        b = self.batch_size
        if not self.pool:
            self.pool = {k: v.new_zeros((self.size, *v.shape[1:])) for k, v in batch.items()}
        if self.filled < self.size:
            for k, v in batch.items():
                self.pool[k][self.filled:self.filled + b] = v
            self.filled += b
            return batch
        order = torch.randperm(self.size, generator=self.generator)
        out = {}
        for k, v in batch.items():
            self.pool[k] = self.pool[k][order]
            out[k] = self.pool[k][:b].clone()
            self.pool[k][:b] = v
        return out

    def state_dict(self) -> Dict[str, Any]:
        return {"pool": dict(self.pool), "filled": self.filled, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.pool = {k: v.clone() for k, v in state["pool"].items()}
        self.filled = int(state["filled"])
        self.generator.set_state(state["generator"])


class BatchStream:
    """Endless batches over epochs that remembers its position for exact resume.

    ``next()`` returns a dict of batched tensors. ``state`` / ``load_state`` save and restore the
    position; batches never straddle epochs (the last partial batch of an epoch is dropped). One
    DataLoader serves all epochs; its workers persist (``persistent_workers``), the sampler is
    re-positioned per epoch. ``queue_size > 0`` passes batches through a :class:`PairQueue`.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 workers: int = 0, queue_size: int = 0) -> None:
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers
        self.sampler = ResumableSampler(len(dataset), seed, rank, world)  # type: ignore[arg-type]
        if self.sampler.per_rank() < batch_size:
            raise RSDError(f"the data set has {len(dataset)} samples, fewer than one batch of {batch_size} per "  # type: ignore[arg-type]
                           "process; lower the batch size or set data.length")
        self.state = LoaderState()
        self.queue = PairQueue(queue_size, batch_size, seed * 31 + rank) if queue_size > 0 else None
        # workers start from a clean forkserver, not a fork of this (possibly multi-threaded) process:
        # forking after OpenMP/TBB runtimes started (OpenVINO's, seen here) can crash the worker or the parent
        context = "forkserver" if workers > 0 and "forkserver" in mp.get_all_start_methods() else None
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 multiprocessing_context=context)
        self._iter: Optional[Iterator] = None

    def load_state(self, state: LoaderState) -> None:
        self.state = LoaderState(state.epoch, state.consumed)
        self._iter = None

    def _start_epoch(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.state.epoch)  # type: ignore[attr-defined]
        self.sampler.set_position(self.state.epoch, self.state.consumed)
        self._iter = iter(self.loader)

    def next(self) -> Dict[str, torch.Tensor]:
        for _ in range(2):
            if self._iter is None:
                self._start_epoch()
            try:
                batch = next(self._iter)  # type: ignore[arg-type]
                self.state.consumed += self.batch_size
                return self.queue.exchange(batch) if self.queue is not None else batch
            except StopIteration:
                self.state = LoaderState(self.state.epoch + 1, 0)
                self._iter = None
        raise RSDError("the data stream produced no batch; the data set is too small for the batch size")
