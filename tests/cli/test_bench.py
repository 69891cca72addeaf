"""rsd-bench CLI: writes JSON/table/plot; bad input gives one 'error:' line and a non-zero exit."""
from __future__ import annotations

import json

import pytest

from rsd_deploy.cli.bench import main


def _exit_code(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_tiny_run_writes_all_outputs(tmp_path, capsys):
    out = tmp_path / "res"
    main(["--arch", "tiny", "--size", "16", "--size", "16x32", "--repeats", "2", "--contender", "rsd",
          "--contender", "resshift-v3", "-o", str(out), "--no-progress", "--threads", "1"])
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["sizes"] == [[16, 16], [16, 32]]
    assert data["settings"]["repeats"] == 2
    assert len(data["entries"]) == 4 and all(e["status"] == "ok" for e in data["entries"])
    assert all(e["latency_ms"]["n"] == 2 for e in data["entries"])
    assert {r["baseline"] for r in data["speedups"]} == {"resshift-v3"}
    assert (out / "results.png").stat().st_size > 0
    assert "RSD speed-up" in (out / "results.md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_recipe_is_overridden_by_options(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("description: test\narch: tiny\nsizes: [16]\nrepeats: 1\ncontenders: [sinsr]\n")
    out = tmp_path / "o"
    main(["--recipe", str(recipe), "--repeats", "2", "-o", str(out), "--no-progress"])
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["repeats"] == 2 and data["settings"]["contenders"] == ["sinsr"]
    assert data["settings"]["arch"] == "tiny"


@pytest.mark.parametrize("argv, code, words", [
    (["--size", "0"], 2, "not positive"),
    (["--size", "huge"], 2, "bad size"),
    (["--backend", "tflite-fp32"], 2, "unknown backend"),
    (["--checkpoint", "rsd"], 2, "CONTENDER=PATH"),
    (["--checkpoint", "rsd=/nonexistent.pth"], 2, "file not found"),
    (["--contender", "esrgan"], 2, "Invalid value for '--contender'"),  # click's own usage error: one line too
    (["--no-such-option"], 2, "No such option"),
    (["--seed", "-1"], 2, "'--seed': -1 is not in the range"),
])
def test_bad_input_one_line_error(tmp_path, capsys, argv, code, words):
    assert _exit_code(argv + ["-o", str(tmp_path / "x")]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("text, words", [
    ("sizez: [16]\n", "unknown setting 'sizez' (did you mean 'sizes'?)"),
    ("- sizes\n- [16]\n", "must be a mapping of settings, not a list"),
    ("batch: two\n", "bad setting type"),
    ("seed: 18446744073709551616\n", "seed 18446744073709551616 is out of range"),
    ("sizes: [16\n", "cannot be read"),
])
def test_bad_recipe_is_a_usage_error_in_one_line(tmp_path, capsys, text, words):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    assert _exit_code(["--recipe", str(recipe), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert words in err and "__init__" not in err and "Traceback" not in err, err
    assert recipe.read_text() == text and not (tmp_path / "x").exists()


def test_checkpoints_and_quality_against_hr(tmp_path, shared_dir, native_bf16):
    fx, data = shared_dir / "fixtures", shared_dir / "data" / "imagenet_val_sr"
    out = tmp_path / "q"
    main(["--checkpoint", f"rsd={fx / 'rsd_student_tiny' / 'state_dict.pth'}",
          "--checkpoint", f"resshift-v3={fx / 'unet_tiny' / 'state_dict.pth'}",
          "--contender", "rsd", "--contender", "resshift-v3", "--vq", str(fx / "vq_tiny" / "state_dict.pth"),
          "--size", "16", "--repeats", "1", "--threads", "1", "--no-progress", "-o", str(out),
          "--backend", "torch-fp32", "--backend", "torch-bf16",
          "--quality-lr", str(data / "lq"), "--quality-hr", str(data / "gt"), "--quality-limit", "1"])
    res = json.loads((out / "results.json").read_text())
    assert res["random_weights"] is False
    rows = {(r["contender"], r["backend"]): r for r in res["quality"]["rows"]}
    ref = rows[("rsd", "torch-fp32")]
    assert ref["vs_reference"]["max_abs"] == 0.0
    assert 0 < ref["vs_hr"]["psnr_y"] < 60 and 0 < ref["vs_hr"]["ssim_rgb"] <= 1
    assert rows[("resshift-v3", "torch-bf16")]["vs_reference"]["max_abs"] > 0  # bf16 differs, and says so
    assert "PSNR-Y" in (out / "results.md").read_text()


def test_checkpoint_of_the_wrong_kind_is_refused(tmp_path, capsys, shared_dir):
    fx = shared_dir / "fixtures"
    code = _exit_code(["--checkpoint", f"sinsr={fx / 'rsd_student_tiny' / 'state_dict.pth'}", "--contender", "sinsr",
                       "--vq", str(fx / "vq_tiny" / "state_dict.pth"), "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 3 and "noise channels" in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA path")
def test_nothing_measurable_writes_the_report_and_fails(tmp_path, capsys):
    out = tmp_path / "o"
    code = _exit_code(["--device", "cuda", "--arch", "tiny", "--size", "16", "--backend", "torch-fast-fp16",
                       "--contender", "rsd", "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 7 and err.startswith("error: nothing could be measured") and "no CUDA device" in err
    assert "skipped: no CUDA device" in (out / "results.md").read_text()
