"""One export of the official tiny RSD fixtures (fp32 + fp16 + int8), made once per test session
through the real CLI and shared by tests/export/test_onnx_*, test_fp16*, test_int8* and
tests/backends/test_ort_backend.py."""
from __future__ import annotations

import atexit
import functools
import shutil
import json
import tempfile
from pathlib import Path
from typing import Tuple

import pytest

from tests.conftest import DATA, FIXTURES

#: latent (= LR) export/accuracy shape: one 16 x 16 tile of the tiny model (multiple 16), SR 64 x 64
OPT = "1x16x16"
UNET = FIXTURES / "rsd_student_tiny" / "state_dict.pth"
VQ = FIXTURES / "vq_tiny" / "state_dict.pth"


@functools.lru_cache(maxsize=1)
def _export() -> Tuple[Path, int, str, str]:
    import torch

    from rsd_deploy.cli.export import cli
    from rsd_deploy.cli.common import run_command

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="rsd-tiny-export-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    out = root / "export"
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = run_command(cli, ["--checkpoint", str(UNET), "--vq", str(VQ), "-o", str(out), "--fp16", "--int8",
                                     "--int8-graphs", "decoder",  # untrained fixtures: encoder int8 flips codes
                                     "--calib-count", "4", "--opt-shape", OPT, "-q"])
    finally:
        torch.set_num_threads(old)
    return out, code, stdout.getvalue(), stderr.getvalue()


def tiny_export() -> Tuple[Path, int, str, str]:
    """(export dir, exit code, stdout, stderr) of ``rsd-export`` on the tiny fixtures."""
    if not (UNET.is_file() and VQ.is_file() and (DATA / "imagenet_val_sr" / "lq").is_dir()):
        pytest.skip("shared fixtures or data are absent")
    return _export()


def manifest_of(export_dir: Path) -> dict:
    return json.loads((export_dir / "manifest.json").read_text())


def accuracy_of(export_dir: Path) -> dict:
    return json.loads((export_dir / "accuracy.json").read_text())
