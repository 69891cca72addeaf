"""Fixtures for the training tests: tiny official-format nets, a 4-image HR folder, config factory."""
from __future__ import annotations

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
    """Four HR training images: shared hr_photos (the training set; never the test sets) shrunk to a
    ~256 px short side so tests decode them fast."""
    import cv2

    from rsd_deploy.pipeline.image_io import image_files

    src = DATA / "hr_photos"
    if not src.is_dir() or not TEACHER.is_file() or not VQ.is_file():
        pytest.skip("shared data / fixtures are absent")
    out = tmp_path_factory.mktemp("hr")
    for p in image_files(src)[:4]:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        f = 256 / min(img.shape[:2])
        img = cv2.resize(img, (max(256, round(img.shape[1] * f)), max(256, round(img.shape[0] * f))),
                         interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / f"{p.stem}.png"), img)
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

