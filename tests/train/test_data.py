"""Degradation, datasets and the resumable batch stream."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rsd_deploy.errors import RSDError
from rsd_deploy.train.data import BatchStream, DegradedHRDataset, LoaderState, PairedDataset, ResumableSampler
from rsd_deploy.train.degradation import degrade
from tests.conftest import DATA


def test_degrade_shape_range_and_seed():
    hr = np.random.default_rng(1).random((64, 96, 3)).astype(np.float32)
    a = degrade(hr, np.random.default_rng(5))
    b = degrade(hr, np.random.default_rng(5))
    c = degrade(hr, np.random.default_rng(6))
    assert a.shape == (16, 24, 3) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(a * 255, np.round(a * 255), atol=1e-4)  # 8-bit quantised like a saved file


def test_degraded_dataset_is_seeded(shared_dir):
    ds = DegradedHRDataset([DATA / "realset65"], gt_size=64, seed=3, length=6)
    a, b = ds[2], ds[2]
    assert a["gt"].shape == (3, 64, 64) and a["lq"].shape == (3, 16, 16)
    assert torch.equal(a["lq"], b["lq"]) and a["gt"].min() >= -1 and a["gt"].max() <= 1
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["gt"], a["gt"])


def test_paired_dataset_crops_align(shared_dir):
    ds = PairedDataset(DATA / "imagenet_val_sr" / "lq", DATA / "imagenet_val_sr" / "gt", lq_size=16, hflip=False)
    item = ds[0]
    assert item["lq"].shape == (3, 16, 16) and item["gt"].shape == (3, 64, 64)
    # the HR crop downsampled is close to its LR crop (same place in the image)
    down = torch.nn.functional.interpolate(item["gt"][None], size=(16, 16), mode="area")[0]
    assert (down - item["lq"]).abs().mean() < 0.15


def test_paired_dataset_reports_missing_partner(tmp_path, shared_dir):
    (tmp_path / "lq").mkdir(), (tmp_path / "gt").mkdir()
    import shutil

    src = sorted((DATA / "imagenet_val_sr" / "lq").iterdir())[0]
    shutil.copy(src, tmp_path / "lq" / src.name)
    with pytest.raises(RSDError, match="no HR partner"):
        PairedDataset(tmp_path / "lq", tmp_path / "gt")


def test_sampler_shards_are_disjoint_and_cover():
    shards = [list(ResumableSampler(10, seed=1, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(i for _, i in shards[0] + shards[1]) == list(range(10))
    assert {e for e, _ in shards[0]} == {0}


class _Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 7

    def __getitem__(self, key):
        epoch, i = key
        return {"x": torch.tensor(i), "epoch": torch.tensor(epoch)}


def test_batch_stream_resumes_mid_epoch():
    stream = BatchStream(_Numbers(), batch_size=2, seed=4)
    seq = [stream.next()["x"].tolist() for _ in range(6)]  # crosses an epoch (3 batches per epoch)
    again = BatchStream(_Numbers(), batch_size=2, seed=4)
    head = [again.next()["x"].tolist() for _ in range(4)]
    state = LoaderState(again.state.epoch, again.state.consumed)
    resumed = BatchStream(_Numbers(), batch_size=2, seed=4)
    resumed.load_state(state)
    tail = [resumed.next()["x"].tolist() for _ in range(2)]
    assert head + tail == seq
    assert seq[:3] != seq[3:6]  # a new permutation each epoch


def test_batch_stream_keeps_its_workers_across_epochs():
    stream = BatchStream(_Numbers(), batch_size=2, seed=4, workers=1)
    loader = stream.loader
    batches = [stream.next() for _ in range(7)]  # three epochs (3 batches each)
    assert stream.loader is loader and loader.persistent_workers
    assert [int(b["epoch"][0]) for b in batches] == [0, 0, 0, 1, 1, 1, 2]
    plain = BatchStream(_Numbers(), batch_size=2, seed=4)
    assert [b["x"].tolist() for b in batches] == [plain.next()["x"].tolist() for _ in range(7)]


def _class_tree(root, classes: int = 6, per_class: int = 3, size: int = 40):
    """An ImageNet-style train tree: one folder per class, JPEGs named like ImageNet's, each class one colour."""
    import cv2

    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            img = np.full((size, size + 8 * k, 3), 20 + 35 * c, np.uint8)
            cv2.imwrite(str(folder / f"n{c:08d}_{k}.JPEG"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    return root


def test_class_folder_tree_is_listed_recursively_and_every_class_is_sampled(tmp_path):
    root = _class_tree(tmp_path / "train")
    (root / ".hidden").mkdir()
    (root / "notes.txt").write_text("not an image")
    ds = DegradedHRDataset([root], gt_size=32, seed=1, length=4)  # fewer samples per epoch than files
    assert len(ds.files) == 18 and all(p.suffix == ".JPEG" for p in ds.files)
    stream = BatchStream(ds, batch_size=2, seed=1)
    seen = set()
    for _ in range(2 * 6):  # six epochs of 4 samples
        stream.next()
    for epoch in range(6):
        seen |= {ds.files[ds.file_index(epoch, i)].parent.name for i in range(4)}
    assert seen == {f"n{c:08d}" for c in range(6)}
    # a length below the file count is not "the first N sorted files": epochs draw different subsets
    first = {ds.file_index(0, i) for i in range(4)}
    assert first != set(range(4)) or {ds.file_index(1, i) for i in range(4)} != first


def test_every_class_reaches_the_batches(tmp_path):
    """The batches themselves (not only the file map) cover all classes: each class has its own grey level."""
    root = _class_tree(tmp_path / "train", classes=4, per_class=2)
    ds = DegradedHRDataset([root], gt_size=32, seed=2, length=8, rescale_gt=False)
    stream = BatchStream(ds, batch_size=4, seed=2)
    levels = set()
    for _ in range(2):
        gt = stream.next()["gt"]
        levels |= {int(round((float(x) + 1) * 127.5 / 35)) for x in gt.mean((1, 2, 3))}
    assert len(levels) == 4


def test_uint8_cache_gives_the_same_samples(tmp_path):
    root = _class_tree(tmp_path / "train", classes=2, per_class=2)
    plain = DegradedHRDataset([root], gt_size=32, seed=3)
    cached = DegradedHRDataset([root], gt_size=32, seed=3, cache_bytes=1 << 20)
    for i in range(4):
        a, b, c = plain[(0, i)], cached[(0, i)], cached[(0, i)]
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], c["gt"])
    assert cached.cache.used > 0 and all(v.dtype == np.uint8 for v in cached.cache._items.values())
    tiny = DegradedHRDataset([root], gt_size=32, seed=3, cache_bytes=100)
    tiny[(0, 0)]
    assert tiny.cache.used == 0  # over the bound: nothing kept


def test_rescale_gt_takes_the_whole_short_side(tmp_path):
    import cv2

    from rsd_deploy.train.data import rescale_square

    img = np.repeat(np.repeat((np.arange(100, dtype=np.float32) / 100)[None, :, None], 60, 0), 3, 2)
    out = rescale_square(img, 32, np.random.default_rng(0))
    assert out.shape == (32, 32, 3)
    # exactly one 60 x 60 square (the whole short side) resized with area interpolation
    refs = [cv2.resize(img[:, left:left + 60], (32, 32), interpolation=cv2.INTER_AREA) for left in range(41)]
    assert any(np.array_equal(out, r) for r in refs)
    small = rescale_square(np.ones((20, 24, 3), np.float32), 32, np.random.default_rng(0))
    assert small.shape == (32, 32, 3)  # padded up, not resized


def test_pair_queue_swaps_batches_and_resumes():
    from rsd_deploy.train.data import PairQueue

    with pytest.raises(RSDError, match="multiple of the per-process micro-batch"):
        PairQueue(5, 2, seed=0)
    q = PairQueue(4, 2, seed=0)
    batches = [{"x": torch.tensor([2 * k, 2 * k + 1])} for k in range(6)]
    out = [q.exchange(b)["x"].tolist() for b in batches[:2]]
    assert out == [[0, 1], [2, 3]]  # filling: passed through
    state = {"pool": {k: v.clone() for k, v in q.state_dict()["pool"].items()}, "filled": q.filled,
             "generator": q.generator.get_state()}
    rest = [q.exchange(b)["x"].tolist() for b in batches[2:]]
    assert all(set(r) <= set(range(12)) for r in rest) and rest[0] != [4, 5]
    again = PairQueue(4, 2, seed=99)
    again.load_state_dict(state)
    assert [again.exchange(b)["x"].tolist() for b in batches[2:]] == rest
