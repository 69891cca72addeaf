"""rsd-eval: tiled full-size evaluation through the SR pipeline, metrics from rsd_deploy.metrics, JSON + Markdown."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rsd_deploy import metrics
from rsd_deploy.cli.eval import main
from tests.conftest import DATA, FIXTURES

STUDENT = FIXTURES / "rsd_student_tiny" / "state_dict.pth"
VQ = FIXTURES / "vq_tiny" / "state_dict.pth"


@pytest.fixture
def pairs(tmp_path) -> Path:
    """Three HR crops of the training photos (96 x 80 and 80 x 64 px) and their area-downscaled x4 LR."""
    from rsd_deploy.pipeline.image_io import image_files

    src = image_files(DATA / "hr_photos")[:3] if (DATA / "hr_photos").is_dir() else []
    if len(src) < 3 or not STUDENT.is_file():
        pytest.skip("shared data / fixtures are absent")
    (tmp_path / "lr").mkdir(), (tmp_path / "hr").mkdir()
    for k, p in enumerate(src):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        h, w = (80, 96) if k else (64, 80)
        hr = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(tmp_path / "hr" / f"im{k}.png"), hr)
        cv2.imwrite(str(tmp_path / "lr" / f"im{k}.png"), cv2.resize(hr, (w // 4, h // 4), interpolation=cv2.INTER_AREA))
    return tmp_path


def _run(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return info.value.code, out.err


def test_tiled_evaluation_matches_the_pipeline_and_the_metrics_module(pairs, capsys):
    out = pairs / "report"
    code, err = _run(capsys, [str(pairs / "lr"), "--hr", str(pairs / "hr"), "-o", str(out), "--checkpoint",
                              str(STUDENT), "--vq", str(VQ), "--tile", "16", "--overlap", "4", "--save-images",
                              "--device", "cpu", "-q"])
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["images"] == 3 and report["settings"]["tile"] == 16 and not report["failures"]
    for row in report["images"]:
        sr = cv2.cvtColor(cv2.imread(str(out / "images" / f"{Path(row['image']).stem}_x4.png")), cv2.COLOR_BGR2RGB)
        hr = cv2.cvtColor(cv2.imread(str(pairs / "hr" / row["image"])), cv2.COLOR_BGR2RGB)
        ref = metrics.sr_metrics(sr, hr)
        assert row["psnr_y"] == pytest.approx(ref["psnr_y"], abs=1e-9) and row["ssim_y"] == pytest.approx(ref["ssim_y"])
    assert report["means"]["psnr_y"] == pytest.approx(np.mean([r["psnr_y"] for r in report["images"]]))
    # the images went through the SR pipeline's tiling (tile 16 < the 24 px LR side): same result as rsd-upscale's path
    from rsd_deploy.pipeline.image_io import read_image
    from rsd_deploy.pipeline.loading import ModelSource, resolve_backend
    from rsd_deploy.pipeline.sr_pipeline import SRPipeline
    from rsd_deploy.types import TileConfig

    backend, info = resolve_backend(ModelSource(checkpoint=STUDENT, vq=VQ, device="cpu"))
    direct = metrics.to_uint8(SRPipeline(backend, info, TileConfig(tile=16, overlap=4)).upscale_array(
        read_image(pairs / "lr" / "im1.png").rgb))
    saved = cv2.cvtColor(cv2.imread(str(out / "images" / "im1_x4.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(direct, saved)
    md = (out / "report.md").read_text()
    assert "| **mean** |" in md and "PSNR-Y" in md and "LPIPS-Alex not computed" in md and "im2.png" in md


def test_lpips_alex_column_when_weights_are_local(pairs, capsys):
    import torch

    from rsd_deploy.train.lpips import LPIPS

    torch.manual_seed(0)
    ref = LPIPS("alex")
    state = {k: v for k, v in ref.state_dict().items() if k.startswith("features.")}
    state.update({f"lin{k}.model.1.weight": ref.lins[k].weight.abs() for k in range(5)})
    torch.save(state, pairs / "lpips_alex.pth")
    code, err = _run(capsys, [str(pairs / "lr"), "--hr", str(pairs / "hr"), "-o", str(pairs / "r"), "--checkpoint",
                              str(STUDENT), "--vq", str(VQ), "--lpips-weights", str(pairs / "lpips_alex.pth"),
                              "--limit", "2", "-q"])
    assert code == 0, err
    report = json.loads((pairs / "r" / "report.json").read_text())
    assert len(report["images"]) == 2 and all(r["lpips_alex"] > 0 for r in report["images"])
    assert any("CLIPIQA not computed" in n for n in report["notes"])


def test_a_bad_pair_is_reported_and_the_rest_go_on(pairs, capsys):
    cv2.imwrite(str(pairs / "hr" / "im0.png"), np.zeros((10, 12, 3), np.uint8))  # not 4x its LR
    code, err = _run(capsys, [str(pairs / "lr"), "--hr", str(pairs / "hr"), "-o", str(pairs / "r"), "--checkpoint",
                              str(STUDENT), "--vq", str(VQ), "-q"])
    assert code == 1 and "im0.png" in err
    report = json.loads((pairs / "r" / "report.json").read_text())
    assert [f["image"] for f in report["failures"]] == ["im0.png"] and len(report["images"]) == 2


def test_missing_hr_partner_is_one_line(pairs, capsys):
    (pairs / "hr" / "im2.png").unlink()
    code, err = _run(capsys, [str(pairs / "lr"), "--hr", str(pairs / "hr"), "-o", str(pairs / "r")])
    assert code == 2 and err.count("\n") == 1 and "im2.png" in err and "no HR partner" in err
