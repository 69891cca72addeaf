"""Issue 12's evaluation tooling: the hr_photos validation crops (train.val_crops) and the model comparison
(train.compare, train/scripts/evaluate_models.py) on the tiny fixtures, against independent computations."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsd_deploy.errors import ConfigError, RSDError
from tests.conftest import FIXTURES, ROOT
from tests.train.conftest import TEACHER, VQ

STUDENT = FIXTURES / "rsd_student_tiny" / "state_dict.pth"


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def crop_set(hr_dir, tmp_path_factory):
    """Two 64 px crops (LR 16 px) of each of the four small HR test photos."""
    from rsd_deploy.train.val_crops import CropSetConfig, make_crop_set

    out = tmp_path_factory.mktemp("crops")
    make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=out, size=64, per_image=2, seed=3))
    return out


def test_crop_boxes_are_spread_one_per_cell_and_seeded():
    from rsd_deploy.train.val_crops import crop_boxes, grid_shape

    assert [grid_shape(n) for n in (1, 3, 4, 6)] == [(1, 1), (1, 3), (2, 2), (2, 3)]
    boxes = crop_boxes(1280, 2048, 256, 4, np.random.default_rng(5))
    assert boxes == crop_boxes(1280, 2048, 256, 4, np.random.default_rng(5))
    assert boxes != crop_boxes(1280, 2048, 256, 4, np.random.default_rng(6))
    for k, (y, x) in enumerate(boxes):  # 2 x 2 cells of 640 x 1024: each crop starts inside its own cell
        r, c = divmod(k, 2)
        assert 640 * r <= y <= 640 * (r + 1) - 256 and 1024 * c <= x <= 1024 * (c + 1) - 256
    # cells smaller than the crop: clamped inside the image
    for y, x in crop_boxes(300, 300, 256, 4, np.random.default_rng(0)):
        assert 0 <= y <= 44 and 0 <= x <= 44
    with pytest.raises(ConfigError, match="smaller than the 256 px crop"):
        crop_boxes(200, 300, 256, 4, np.random.default_rng(0))


def test_crop_set_is_deterministic_and_its_lr_is_plain_antialiased_bicubic(crop_set, hr_dir, tmp_path):
    from rsd_deploy.train.val_crops import CropSetConfig, make_crop_set

    manifest = json.loads((crop_set / "crops.json").read_text())
    assert len(manifest["crops"]) == 8 and manifest["seed"] == 3
    again = make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=tmp_path / "again", size=64, per_image=2, seed=3))
    assert again["crops"] == manifest["crops"]
    for c in manifest["crops"]:
        gt, lq = _rgb(crop_set / "gt" / c["file"]), _rgb(crop_set / "lq" / c["file"])
        assert np.array_equal(lq, _rgb(tmp_path / "again" / "lq" / c["file"]))
        source = _rgb(hr_dir / c["source"])
        assert np.array_equal(gt, source[c["y"]:c["y"] + 64, c["x"]:c["x"] + 64])  # native pixels
        # the rule, computed here from scratch: torch antialiased bicubic on [0, 1], rounded to 8 bits
        t = torch.from_numpy(gt.transpose(2, 0, 1).copy())[None].float() / 255
        ref = F.interpolate(t, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
        ref = np.clip(np.round(ref[0].numpy().transpose(1, 2, 0) * 255), 0, 255)
        assert np.array_equal(lq, ref.astype(np.uint8))
        # and it is PIL's bicubic (a = -0.5, kernel widened by the scale) up to rounding away from the border
        from PIL import Image

        pil = np.asarray(Image.fromarray(gt).resize((16, 16), Image.BICUBIC)).astype(int)
        assert np.abs(pil - lq.astype(int))[2:-2, 2:-2].max() <= 1
    other = make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=tmp_path / "other", size=64, per_image=2, seed=4))
    assert other["crops"] != manifest["crops"]


def test_crop_set_bad_input(hr_dir, tmp_path):
    from rsd_deploy.train.val_crops import CropSetConfig, make_crop_set

    with pytest.raises(RSDError, match="not in the data folders"):
        make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=tmp_path / "a", names=["nope.png"], size=64))
    with pytest.raises(ConfigError, match="inside the HR folder"):
        make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=hr_dir / "crops", size=64))
    with pytest.raises(ConfigError, match="smaller than the 4096 px crop"):
        make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=tmp_path / "b", size=4096))
    with pytest.raises(ConfigError, match="downscale"):
        make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=tmp_path / "c", size=64, downscale=0.5))
    assert not (hr_dir / "crops").exists()


def test_downscaled_crop_set_cuts_the_area_downscaled_photo(hr_dir, tmp_path):
    from rsd_deploy.train.val_crops import CropSetConfig, make_crop_set

    manifest = make_crop_set(CropSetConfig(hr_dir=hr_dir, output_dir=tmp_path, size=32, per_image=1, seed=3,
                                           downscale=2.0))
    assert manifest["downscale"] == 2.0
    for c in manifest["crops"]:
        source = _rgb(hr_dir / c["source"])
        small = cv2.resize(source, (source.shape[1] // 2, source.shape[0] // 2), interpolation=cv2.INTER_AREA)
        assert np.array_equal(_rgb(tmp_path / "gt" / c["file"]), small[c["y"]:c["y"] + 32, c["x"]:c["x"] + 32])


def _y(rgb8: np.ndarray) -> np.ndarray:
    x = rgb8.astype(np.float64)
    return 16 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255


def test_bicubic_row_equals_hand_computed_metrics(crop_set):
    from rsd_deploy.train import compare

    result = compare.compare_set("crops", crop_set, {}, limit=3)
    assert result.rows == ["bicubic"] and len(result.images) == 3 and result.paired == {}
    first = result.images[0]
    lq, gt = _rgb(crop_set / "lq" / first["image"]), _rgb(crop_set / "gt" / first["image"])
    # bicubic x4: PyTorch bicubic (a = -0.75, no antialias) of the LR in [-1, 1], rounded as rsd-upscale writes
    up = F.interpolate(torch.from_numpy(lq.transpose(2, 0, 1).copy())[None].float() / 127.5 - 1, scale_factor=4,
                       mode="bicubic", align_corners=False)
    sr = np.rint((up[0].clamp(-1, 1).numpy().transpose(1, 2, 0) * 0.5 + 0.5) * 255).astype(np.uint8)
    mse = np.mean((_y(sr) - _y(gt)) ** 2)
    row = first["bicubic"]
    assert row["psnr_y"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-4)
    colour = np.mean(np.abs(sr.reshape(-1, 3).astype(float).mean(0) - gt.reshape(-1, 3).astype(float).mean(0)))
    assert row["colour_error"] == pytest.approx(colour, abs=1e-3)
    grad = lambda y: np.mean(np.hypot(y[:-1, 1:] - y[:-1, :-1], y[1:, :-1] - y[:-1, :-1]))  # noqa: E731
    assert row["detail_ratio"] == pytest.approx(grad(_y(sr)) / grad(_y(gt)), rel=1e-3)
    assert 0 < row["ssim_y"] < 1
    assert result.means["bicubic"]["psnr_y"] == pytest.approx(np.mean([i["bicubic"]["psnr_y"] for i in result.images]))
    # the set's detail ratio pools the gradients: mean SR gradient / mean GT gradient
    sr_g = [i["bicubic"]["mean_gradient_y"] for i in result.images]
    gt_g = [i["bicubic"]["gt_mean_gradient_y"] for i in result.images]
    assert first["bicubic"]["gt_mean_gradient_y"] == pytest.approx(grad(_y(gt)), rel=1e-9)
    assert result.means["bicubic"]["detail_ratio"] == pytest.approx(np.mean(sr_g) / np.mean(gt_g), rel=1e-12)


def test_paired_differences_by_hand():
    from rsd_deploy.train.compare import paired_differences

    pairs = ((21, 20), (19, 20.5), (23, 20))
    per_image = [{"student_1_step": {"psnr_y": s}, "bicubic": {"psnr_y": b}} for s, b in pairs]
    d = paired_differences(per_image, ["bicubic", "student_1_step"])["student_1_step - bicubic"]
    diffs = np.array([1.0, -1.5, 3.0])
    assert d["mean"] == pytest.approx(diffs.mean()) and d["std"] == pytest.approx(diffs.std(ddof=1))
    assert (d["wins"], d["total"]) == (2, 3) and d["min"] == pytest.approx(-1.5)  # the worst image
    assert paired_differences(per_image, ["bicubic"]) == {}  # no student row: nothing to pair


def test_model_rows_are_what_rsd_upscale_writes(crop_set, tmp_path):
    from rsd_deploy.pipeline.batch import UpscaleConfig, upscale_files
    from rsd_deploy.pipeline.loading import ModelSource
    from rsd_deploy.train import compare
    from rsd_deploy.types import ModelKind

    rows = compare.contenders(VQ, TEACHER, str(STUDENT), ModelKind.RESSHIFT_V3, device="cpu")
    assert [r.name for r in rows] == ["teacher_15_steps", "teacher_1_step", "student_1_step"]
    pipelines = {r.name: compare.build_pipeline(r.source) for r in rows}
    result = compare.compare_set("crops", crop_set, pipelines, limit=1)
    assert result.rows == ["bicubic", *pipelines]
    lq_dir, gt_dir = crop_set / "lq", crop_set / "gt"
    names = [img["image"] for img in result.images]
    for row, kind, ckpt in (("student_1_step", None, STUDENT), ("teacher_1_step", ModelKind.SINSR, TEACHER),
                            ("teacher_15_steps", ModelKind.RESSHIFT_V3, TEACHER)):
        out = tmp_path / row
        upscale_files(UpscaleConfig(inputs=tuple(lq_dir / n for n in names), output_dir=out, progress=False,
                                    source=ModelSource(checkpoint=ckpt, vq=VQ, model=kind, device="cpu")))
        for img in result.images:
            written = _rgb(out / (Path(img["image"]).stem + "_x4.png"))
            expected = compare.score(written, _rgb(gt_dir / img["image"]))
            for k, v in expected.items():
                assert img[row][k] == pytest.approx(v, abs=1e-9), (row, k)
    # the teacher's two rows are different samplers; the student differs from both
    a, b, c = (result.means[r]["psnr_y"] for r in ("teacher_15_steps", "teacher_1_step", "student_1_step"))
    assert len({round(a, 6), round(b, 6), round(c, 6)}) == 3
    paired = result.paired["student_1_step - bicubic"]
    diffs = [i["student_1_step"]["psnr_y"] - i["bicubic"]["psnr_y"] for i in result.images]
    assert paired["mean"] == pytest.approx(np.mean(diffs)) and paired["total"] == 1


def test_colour_check_against_bicubic_of_each_image(crop_set):
    from rsd_deploy import metrics
    from rsd_deploy.pipeline.image_io import read_image
    from rsd_deploy.train import compare

    pipeline = compare.build_pipeline(compare.student_source(str(STUDENT), VQ, "cpu"))
    report = compare.colour_check(pipeline, crop_set / "lq", limit=3, threshold=0.5)
    assert report["images"] == 3 and len(report["per_image"]) == 3
    errors = [r["colour_error"] for r in report["per_image"]]
    assert report["max"] == max(errors) and report["mean"] == pytest.approx(np.mean(errors))
    assert report["over_threshold"] == sum(e > 0.5 for e in errors)
    assert [w["colour_error"] for w in report["worst"]] == sorted(errors, reverse=True)
    lr = read_image(crop_set / "lq" / report["per_image"][0]["image"])
    by_hand = metrics.colour_error(compare.upscale_rgb8(pipeline, lr), compare.bicubic_rgb8(lr.rgb))
    assert errors[0] == pytest.approx(by_hand, abs=1e-12)


def test_contenders_need_a_vq_and_a_multistep_teacher():
    from rsd_deploy.train import compare
    from rsd_deploy.types import ModelKind

    with pytest.raises(ConfigError, match="--teacher needs --vq"):
        compare.contenders(None, TEACHER)
    with pytest.raises(ConfigError, match="--student default"):
        compare.contenders(None, None, str(STUDENT))
    with pytest.raises(ConfigError, match="multi-step"):
        compare.contenders(VQ, TEACHER, teacher_kind=ModelKind.SINSR)
    assert compare.student_source("default", None).checkpoint is None  # the embedded model brings its VQ


def _script(name: str = "evaluate_models"):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_script_writes_json_and_markdown_and_says_why_rows_are_missing(crop_set, tmp_path, monkeypatch, capsys,
                                                                       caplog):
    script = _script()
    out = tmp_path / "res.json"
    argv = ["evaluate_models.py", "--vq", str(VQ), "--student", str(STUDENT), "--pairs", f"crops={crop_set}",
            "--colour-check", str(crop_set / "lq"), "--limit", "2", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert script.main() == 0
    assert "teacher rows" in caplog.text
    data = json.loads(out.read_text())
    assert data["sets"][0]["rows"] == ["bicubic", "student_1_step"] and data["colour_check"]["images"] == 2
    assert data["command"].startswith("python evaluate_models.py --vq")
    md = out.with_suffix(".md").read_text()
    assert "evaluate_models.py --vq" in md and "| student_1_step - bicubic |" in md and "Colour check" in md
    means = data["sets"][0]["means"]["bicubic"]
    assert f"| {means['detail_ratio']:.3f} | {means['mean_of_image_detail_ratios']:.3f} |" in md
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", argv[:1] + ["--pairs", f"x={tmp_path}", "--json", str(tmp_path / "x.json")])
    assert script.main() == 2
    err = capsys.readouterr().err
    assert "lq/ and gt/" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


def test_vq_ceilings_rows_match_the_comparison_and_the_round_trip(crop_set, tmp_path, monkeypatch, capsys):
    from rsd_deploy import metrics
    from rsd_deploy.train import compare
    from rsd_deploy.train.method import load_network

    script = _script("vq_ceilings")
    monkeypatch.setattr(sys, "argv", ["vq_ceilings.py", "--vq", str(VQ), "--limit", "3", str(crop_set)])
    assert script.main() == 0
    table = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:6]]
             for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "row" not in line}
    assert list(table) == ["bicubic", "VQ(bicubic)", "VQ(HR)"]
    bicubic = compare.compare_set("crops", crop_set, {}, limit=3).means["bicubic"]
    assert table["bicubic"][0] == pytest.approx(bicubic["psnr_y"], abs=0.006)
    vq = load_network(str(VQ), "vq").eval()
    psnrs = []
    for name in sorted(p.name for p in (crop_set / "gt").iterdir())[:3]:
        gt = _rgb(crop_set / "gt" / name)
        with torch.no_grad():
            rec = vq.decode(vq.encode(torch.from_numpy(gt).permute(2, 0, 1)[None].float() / 127.5 - 1))
        psnrs.append(metrics.psnr(metrics.rgb_to_y(metrics.to_uint8(rec[0].clamp(-1, 1)).transpose(1, 2, 0)),
                                  metrics.rgb_to_y(gt)))
    assert table["VQ(HR)"][0] == pytest.approx(float(np.mean(psnrs)), abs=0.006)
    monkeypatch.setattr(sys, "argv", ["vq_ceilings.py", "--vq", str(VQ), str(tmp_path)])
    assert script.main() == 2
    err = capsys.readouterr().err
    assert "lq/ and gt/" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty" / "lq").mkdir(parents=True)
    (tmp_path / "empty" / "gt").mkdir()
    monkeypatch.setattr(sys, "argv", ["vq_ceilings.py", "--vq", str(VQ), str(tmp_path / "empty")])
    assert script.main() == 2
    err = capsys.readouterr().err
    assert "no images" in err and "empty" in err and len(err.strip().splitlines()) == 1


def test_detail_frontier_script_starts_at_bicubic_and_trades_psnr_for_detail(crop_set, monkeypatch, capsys):
    """train/scripts/detail_frontier.py: amount 0 is the bicubic row; more unsharp masking, more detail."""
    from rsd_deploy.pipeline.image_io import read_image
    from rsd_deploy.train.compare import bicubic_rgb8, pooled_detail_ratio, score

    module = _script("detail_frontier")
    monkeypatch.setattr(sys, "argv", ["detail_frontier.py", str(crop_set)])
    assert module.main() == 0
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    psnr = [float(row[1]) for row in table]
    detail = [float(row[3]) for row in table]
    names = sorted(p.name for p in (crop_set / "gt").iterdir())
    bicubic = [score(bicubic_rgb8(read_image(crop_set / "lq" / n).rgb), read_image(crop_set / "gt" / n).rgb)
               for n in names]
    assert psnr[0] == pytest.approx(np.mean([s["psnr_y"] for s in bicubic]), abs=0.005)
    assert detail[0] == pytest.approx(pooled_detail_ratio(bicubic), abs=0.0005)
    assert all(b > a for a, b in zip(detail, detail[1:]))
    assert psnr[-1] < psnr[0]


def test_named_folder_arguments_split_at_the_first_equals_and_name_the_usage_when_bad():
    import argparse

    from rsd_deploy.train import compare

    parse = compare.named_folder_arg("rows are NAME=DIR")
    assert parse("int8=/tmp/a=b") == ("int8", Path("/tmp/a=b"))
    for bad in ("no_equals", "=dir", "name="):
        with pytest.raises(argparse.ArgumentTypeError, match=f"rows are NAME=DIR; got {bad!r}"):
            parse(bad)
