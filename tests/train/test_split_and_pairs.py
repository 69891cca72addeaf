"""Training data choices of the demo chain: the hr_photos split, plain bicubic pairs, zoomed HR crops."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rsd_deploy.errors import RSDError
from rsd_deploy.train.data import DegradedHRDataset, read_split, select_files
from rsd_deploy.train.degradation import DegradationConfig, bicubic_downsample, degrade
from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_split_separates_train_and_val_and_names_real_files():
    path = REPO / "train" / "configs" / "hr_photos_split.json"
    train, val = read_split(path, "train"), read_split(path, "val")
    assert not set(train) & set(val) and len(train) + len(val) == 40
    photos = SHARED / "data" / "hr_photos"
    if photos.is_dir():
        assert {p.name for p in photos.glob("*.jpg")} == set(train) | set(val)


def test_split_errors_name_the_problem(tmp_path):
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps({"val": ["a.png"]}))
    with pytest.raises(RSDError, match="no 'train' list"):
        read_split(bad, "train")
    with pytest.raises(RSDError, match="not in the data folders .first: b.png"):
        select_files([tmp_path / "a.png"], ["a.png", "b.png"])


def test_dataset_reads_only_the_listed_files(hr_dir):
    names = sorted(p.name for p in hr_dir.iterdir())[:2]
    ds = DegradedHRDataset([hr_dir], gt_size=64, seed=1, only=names, length=4)
    assert [f.name for f in ds.files] == names


def test_bicubic_share_gives_the_plain_antialiased_bicubic_pair():
    rng = np.random.default_rng(0)
    hr = rng.random((64, 64, 3)).astype(np.float32)
    lr = degrade(hr, np.random.default_rng(1), DegradationConfig(bicubic_prob=1.0))
    t = torch.from_numpy(hr.transpose(2, 0, 1).copy())[None]
    ref = torch.nn.functional.interpolate(t, size=(16, 16), mode="bicubic", antialias=True)[0].numpy().transpose(1, 2, 0)
    assert np.array_equal(lr, np.clip(np.round(ref * 255) / 255, 0, 1).astype(np.float32))
    assert np.array_equal(lr, bicubic_downsample(hr, 4))
    # with the official setting (0) the same draw goes through the two-stage pipeline instead
    assert not np.array_equal(degrade(hr, np.random.default_rng(1), DegradationConfig()), lr)


def test_zoomed_crops_are_area_resized_and_bounded(hr_dir):
    ds = DegradedHRDataset([hr_dir], gt_size=64, seed=3, rescale_gt=False, zoom_range=(0.5, 0.5), length=2)
    item = ds[0]
    assert item["gt"].shape == (3, 64, 64) and item["lq"].shape == (3, 16, 16)
    # same draws, native pixels: a different (unresized) square
    native = DegradedHRDataset([hr_dir], gt_size=64, seed=3, rescale_gt=False, length=2)
    assert not torch.equal(native[0]["gt"], item["gt"])


def test_zoom_range_is_validated(make_config):
    from rsd_deploy.train.config import ConfigError

    with pytest.raises(ConfigError, match="zoom_range"):
        make_config("rsd", data={"zoom_range": [0.0, 1.0]}).validate()
