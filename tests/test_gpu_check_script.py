"""benchmarks/gpu_check.sh on a machine without a usable GPU: every step is skipped with its
reason, nothing is written, exit 0 (CUDA is hidden, so this holds on a GPU machine too)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_skips_cleanly_without_a_gpu(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_OUT": str(tmp_path / "results"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    recipes = sorted(p.stem for p in (ROOT / "benchmarks" / "recipes").glob("gpu-*.yaml"))
    expected = ["pytest tests/gpu"] + [f"rsd-bench {r}" for r in recipes] + ["bench_models fp16 fast"]
    assert [line.split(": ")[1] for line in lines if line.startswith("skipped: ")] == expected
    assert all("no CUDA GPU" in line for line in lines if line.startswith("skipped: "))
    assert not (tmp_path / "results").exists()
