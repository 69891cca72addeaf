"""Degradation, datasets and the resumable batch stream."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rsd_deploy.errors import RSDError
from rsd_deploy.train.data import BatchStream, DegradedHRDataset, LoaderState, PairedDataset, ResumableSampler
from rsd_deploy.train.degradation import DegradationConfig, anisotropic_kernel, degrade, sinc_kernel
from tests.conftest import DATA


def test_kernels_are_normalised_and_oriented():
    k = anisotropic_kernel(21, 3.0, 0.5, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    # sigma_x > sigma_y: wider along x (columns) than along y (rows)
    assert k[10, 13] > 5 * k[13, 10]
    s = sinc_kernel(13, np.pi / 3)
    assert s.sum() == pytest.approx(1.0, abs=1e-5) and s.min() < 0  # ringing lobes


def test_degrade_shape_range_and_seed():
    hr = np.random.default_rng(1).random((64, 96, 3)).astype(np.float32)
    a = degrade(hr, np.random.default_rng(5))
    b = degrade(hr, np.random.default_rng(5))
    c = degrade(hr, np.random.default_rng(6))
    assert a.shape == (16, 24, 3) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(a * 255, np.round(a * 255), atol=1e-4)  # 8-bit quantised like a saved file


def test_degradation_config_validation():
    with pytest.raises(RSDError, match="kernel_probs"):
        DegradationConfig(kernel_probs=(1.0, 0.0)).validate()


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
    assert sorted(shards[0] + shards[1]) == list(range(10))


class _Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 7

    def __getitem__(self, i: int):
        return {"x": torch.tensor(i)}


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
