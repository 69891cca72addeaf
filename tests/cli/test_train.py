"""rsd-train CLI and config handling: overrides, one-line errors, export readable by load_checkpoint."""
from __future__ import annotations

import pytest

from rsd_deploy.cli.train import main
from rsd_deploy.train import ConfigError, load_config
from rsd_deploy.train.config import Method
from tests.train.conftest import TEACHER, VQ, hr_dir  # noqa: F401 (hr_dir: the shared HR-images fixture)

REPO_CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "train" / "configs"


def test_published_configs_load_and_validate():
    rsd = load_config(REPO_CONFIGS / "rsd_realsr_x4.yaml")
    rsd.validate(world_size=4)
    assert rsd.method == Method.RSD and rsd.rsd.fake_updates == 5 and rsd.rsd.lpips_weight == 2.0
    assert rsd.rsd.gan_weight == 3e-3 and rsd.optim.lr == 5e-5 and tuple(rsd.optim.betas) == (0.9, 0.95)
    assert rsd.optim.ema == 0.999 and len(rsd.rsd.student_nodes) == 4 and rsd.optim.batch_size == 64
    for name in ("sinsr_realsr_x4.yaml", "resshift_teacher_v1.yaml", "tiny_rsd.yaml", "demo_rsd.yaml"):
        load_config(REPO_CONFIGS / name).validate(world_size=1)


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(REPO_CONFIGS / "tiny_rsd.yaml", ["optim.lr=1e-4", "rsd.student_nodes=[14, 7]", "lpips.required=false"])
    assert cfg.optim.lr == 1e-4 and cfg.rsd.student_nodes == [14, 7] and cfg.lpips.required is False


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key optim.lrr"),
    ("method=gan", "method must be one of"),
    ("optim.batch_size=3", "multiple of micro_batch"),
    ("rsd.generator_loss=kl", "generator_loss"),
    ("novalue", "not key=value"),
    ("optim.precision=fp16", "fp32, bf16 or auto"),
])
def test_bad_configs_give_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(REPO_CONFIGS / "tiny_rsd.yaml", [override]).validate()
    assert "\n" not in str(info.value)


def test_cli_bad_config_exits_with_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["--config", str(tmp_path / "missing.yaml")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config file") and "missing.yaml" in err[0]


def test_cli_missing_lpips_weights_when_required(capsys, tmp_path, hr_dir):
    with pytest.raises(SystemExit) as info:
        main(["--config", str(REPO_CONFIGS / "tiny_rsd.yaml"), f"teacher={TEACHER}", f"vq={VQ}",
              f"data.hr_dirs=[{hr_dir}]", f"output_dir={tmp_path}", "lpips.required=true",
              f"lpips.weights={tmp_path / 'nope.pth'}", "val.every=0", "-q"])
    assert info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: LPIPS weights needed but") and "lpips.required=false" in err[-1]


def test_cli_trains_and_exports_a_loadable_student(capsys, tmp_path, hr_dir):
    with pytest.raises(SystemExit) as info:
        main(["--config", str(REPO_CONFIGS / "tiny_rsd.yaml"), f"teacher={TEACHER}", f"vq={VQ}",
              f"data.hr_dirs=[{hr_dir}]", f"output_dir={tmp_path / 'run'}", "optim.iterations=1",
              "rsd.fake_updates=1", "optim.batch_size=1", "optim.micro_batch=1", "val.every=0",
              "log.sample_every=1", "log.tensorboard=false", "-q"])
    assert info.value.code == 0
    out = tmp_path / "run" / "rsd_ema.safetensors"
    assert str(out) in capsys.readouterr().out
    from rsd_deploy import load_checkpoint

    student = load_checkpoint(out)
    assert student.config.noise_channels == 1
    assert (tmp_path / "run" / "samples" / "step_0000001.png").is_file()
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert list((tmp_path / "run" / "checkpoints").glob("step_*.pt"))


def test_tiny_config_runs_from_any_folder_on_a_class_folder_tree(tmp_path, monkeypatch, capsys):
    """The config's own teacher/VQ/validation paths resolve against the config file, not the working folder."""
    import os

    import cv2
    import numpy as np

    if not TEACHER.is_file():
        pytest.skip("shared fixtures are absent")
    tree = tmp_path / "imagenet" / "train"
    for c in range(3):
        (tree / f"n0000000{c}").mkdir(parents=True)
        for k in range(2):
            img = (np.random.default_rng(c * 10 + k).random((72, 80, 3)) * 255).astype(np.uint8)
            cv2.imwrite(str(tree / f"n0000000{c}" / f"n0000000{c}_{k}.JPEG"), img)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config = os.path.relpath(REPO_CONFIGS / "tiny_rsd.yaml", elsewhere)
    with pytest.raises(SystemExit) as info:
        main(["--config", config, "data.hr_dirs=[../../imagenet/train]", "-o", "run", "optim.iterations=1",
              "rsd.fake_updates=1", "optim.batch_size=1", "optim.micro_batch=1", "log.sample_every=0",
              "log.tensorboard=false", "val.every=1", "val.max_images=1", "-q"])
    assert info.value.code == 0, capsys.readouterr().err
    run = elsewhere / "run"  # output_dir and command-line paths: relative to the working folder
    assert (run / "rsd_ema.safetensors").is_file()
    lines = (run / "metrics.jsonl").read_text()
    assert '"val/psnr"' in lines and '"rsd.lpips_input": "node"' in lines and '"rsd.loss_reduction": "mean"' in lines
    assert '"grad_norm/student"' in lines and '"grad_norm/fake"' in lines and '"perf/images_per_s"' in lines
    assert '"perf/peak_rss_mib"' in lines
