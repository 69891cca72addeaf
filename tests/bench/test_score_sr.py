"""benchmarks/score_sr.py: SR folders scored against HR references with compare.score, paired to the first row."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rsd_deploy.pipeline.image_io import write_image_atomic
from rsd_deploy.train.compare import score

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "score_sr.py"


def write_image(path: Path, rgb: np.ndarray) -> None:
    write_image_atomic(path, np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV layout is BGR


def _images(tmp_path: Path):
    rng = np.random.default_rng(3)
    gt, a, b = (tmp_path / n for n in ("gt", "a", "b"))
    for d in (gt, a, b):
        d.mkdir()
    pairs = []
    for i in range(2):
        hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        sr_a = np.clip(hr.astype(int) + rng.integers(-8, 9, hr.shape), 0, 255).astype(np.uint8)
        sr_b = np.clip(hr.astype(int) + rng.integers(-30, 31, hr.shape), 0, 255).astype(np.uint8)
        write_image(gt / f"im{i}.png", hr)
        write_image(a / f"im{i}_x4.png", sr_a)  # rsd-upscale's naming
        write_image(b / f"im{i}.png", sr_b)
        pairs.append((hr, sr_a, sr_b))
    return gt, a, b, pairs


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_scores_match_compare_score_and_pair_to_the_first_row(tmp_path):
    gt, a, b, pairs = _images(tmp_path)
    out = tmp_path / "res.json"
    done = _run("--gt", str(gt), "--json", str(out), f"fine={a}", f"noisy={b}")
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())["sets"][0]
    means, paired = result["means"], result["paired_psnr_y"]
    per_a = [score(sr, hr)["psnr_y"] for hr, sr, _ in pairs]
    per_b = [score(sr, hr)["psnr_y"] for hr, _, sr in pairs]
    assert abs(means["fine"]["psnr_y"] - np.mean(per_a)) < 1e-9 and abs(means["noisy"]["psnr_y"] - np.mean(per_b)) < 1e-9
    assert list(paired) == ["noisy - fine"]  # every row against the first, not the first against itself
    d = paired["noisy - fine"]
    assert abs(d["mean"] - (np.mean(per_b) - np.mean(per_a))) < 1e-9 and d["mean"] < -5
    assert abs(d["min"] - min(b - a for a, b in zip(per_a, per_b))) < 1e-9 and (d["wins"], d["total"]) == (0, 2)
    md = out.with_suffix(".md").read_text()
    assert "| noisy |" in md and "| noisy - fine |" in md and "s/image" not in md  # no timing for scored folders


def test_a_missing_sr_image_is_a_one_line_error_and_nothing_is_written(tmp_path):
    gt, a, _, _ = _images(tmp_path)
    (a / "im1_x4.png").unlink()
    out = tmp_path / "res.json"
    done = _run("--gt", str(gt), "--json", str(out), f"fine={a}")
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().count("\n") == 0 and "no SR image for im1" in done.stderr
