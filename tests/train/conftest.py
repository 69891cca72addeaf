"""Fixtures for the training tests: tiny official-format nets, a 4-image HR folder, config factory."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from tests.conftest import DATA, FIXTURES

TEACHER = FIXTURES / "unet_tiny" / "state_dict.pth"
VQ = FIXTURES / "vq_tiny" / "state_dict.pth"


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="session")
def hr_dir(tmp_path_factory) -> Path:
    """Four 256x256 HR images (copied from the shared ImageNet pairs)."""
    src = DATA / "imagenet_val_sr" / "gt"
    if not src.is_dir() or not TEACHER.is_file() or not VQ.is_file():
        pytest.skip("shared data / fixtures are absent")
    out = tmp_path_factory.mktemp("hr")
    for p in sorted(src.iterdir())[:4]:
        shutil.copy(p, out / p.name)
    return out


@pytest.fixture
def make_config(hr_dir: Path, tmp_path: Path) -> Callable[..., Any]:
    """TrainConfig factory: tiny teacher/VQ fixtures, 64 px HR crops, micro-batch 1, no validation/LPIPS."""
    from rsd_deploy.train import load_config

    def make(method: str = "rsd", **extra: Any):
        raw = {
            "method": method, "output_dir": str(tmp_path / f"run_{method}"), "seed": 7, "device": "cpu",
            "teacher": str(TEACHER), "vq": str(VQ),
            "data": {"hr_dirs": [str(hr_dir)], "gt_size": 64, "length": 16},
            "optim": {"iterations": 2, "batch_size": 1, "micro_batch": 1},
            "rsd": {"fake_updates": 1},
            "lpips": {"required": False},
            "log": {"every": 1, "checkpoint_every": 0, "sample_every": 0, "tensorboard": False},
            "val": {"every": 0},
        }
        return load_config(raw=_merge(raw, extra))

    return make

