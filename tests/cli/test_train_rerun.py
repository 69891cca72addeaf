"""rsd-train never loses a run (issue 14): re-runs, resume, truncated checkpoints, bad output folders, bad configs.

Every case asserts the exit code, a one-line message naming the file and the fix, no traceback, and
that the checkpoints and metrics already on disk are unchanged.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from rsd_deploy.cli.train import main
from tests.train.conftest import TEACHER, VQ, hr_dir, make_config  # noqa: F401 (shared fixtures)

CONFIG = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_rsd.yaml"


def _args(run: Path, hr_dir: Path, *extra: str):
    return ["--config", str(CONFIG), "-o", str(run), f"teacher={TEACHER}", f"vq={VQ}", f"data.hr_dirs=[{hr_dir}]",
            "optim.iterations=2", "rsd.fake_updates=1", "optim.batch_size=1", "optim.micro_batch=1", "val.every=0",
            "log.sample_every=0", "log.checkpoint_every=1", "log.tensorboard=false", "data.gt_size=64", "-q", *extra]


def _run(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return info.value.code, out.out, [line for line in out.err.splitlines() if line.strip()]


def _snapshot(run: Path):
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file()}


def _steps(run: Path):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "step" in json.loads(line)]


@pytest.fixture
def finished_run(tmp_path, hr_dir, capsys):
    run = tmp_path / "run"
    code, out, _ = _run(capsys, _args(run, hr_dir))
    assert code == 0 and (run / "rsd_ema.safetensors").is_file()
    return run


def test_rerun_into_a_used_folder_is_refused_with_the_resume_command(finished_run, hr_dir, capsys):
    before = _snapshot(finished_run)
    code, _, err = _run(capsys, _args(finished_run, hr_dir))
    assert code == 2 and len(err) == 1
    assert str(finished_run) in err[0] and f"--resume {finished_run}" in err[0] and "--new-run" in err[0]
    assert _snapshot(finished_run) == before


def test_new_run_starts_beside_and_touches_nothing(finished_run, hr_dir, capsys):
    before = _snapshot(finished_run)
    code, out, _ = _run(capsys, _args(finished_run, hr_dir, "--new-run"))
    assert code == 0
    sibling = finished_run.with_name("run-2")
    assert str(sibling / "rsd_ema.safetensors") in out and (sibling / "checkpoints" / "step_0000002.pt").is_file()
    assert _snapshot(finished_run) == before


def test_resume_past_the_end_is_refused(finished_run, hr_dir, capsys):
    before = _snapshot(finished_run)
    code, _, err = _run(capsys, _args(finished_run, hr_dir, "--resume", str(finished_run)))
    assert code == 2 and len(err) == 1
    assert "step_0000002.pt" in err[0] and "nothing to train" in err[0] and "optim.iterations=" in err[0]
    assert _snapshot(finished_run) == before


def test_resume_a_run_folder_after_a_crash_repeats_no_step(make_config, tmp_path, hr_dir, capsys):
    from rsd_deploy.train.loops import Trainer

    run = tmp_path / "crashed"
    cfg = make_config("rsd", output_dir=str(run), data={"gt_size": 64},
                      optim={"iterations": 4}, log={"checkpoint_every": 2, "every": 1})
    Trainer(cfg).run(max_iterations=3)  # "killed" after step 3: checkpoint at 2, metrics up to 3
    assert _steps(run) == [1, 2, 3]
    first_ckpt = (run / "checkpoints" / "step_0000002.pt").read_bytes()
    code, out, err = _run(capsys, _args(run, hr_dir, "optim.iterations=4", "log.checkpoint_every=2",
                                        "data.length=16", "seed=7", "--resume", str(run)))
    assert code == 0, err
    assert _steps(run) == [1, 2, 3, 4]  # step 3 logged once, by the resumed run
    assert (run / "checkpoints" / "step_0000002.pt").read_bytes() == first_ckpt  # the earlier run's, kept
    assert (run / "checkpoints" / "step_0000004.pt").is_file()


def test_truncated_latest_checkpoint_falls_back_and_is_kept(finished_run, hr_dir, capsys):
    ckpts = finished_run / "checkpoints"
    latest = ckpts / "step_0000002.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # a crash while copying / a full disk
    truncated = latest.read_bytes()
    previous = (ckpts / "step_0000001.pt").read_bytes()
    code, out, err = _run(capsys, _args(finished_run, hr_dir, "optim.iterations=3", "--resume", str(finished_run)))
    assert code == 0
    assert latest.read_bytes() == truncated and (ckpts / "step_0000001.pt").read_bytes() == previous
    assert (ckpts / "step_0000002-1.pt").is_file()  # the step-2 checkpoint of this run, beside the broken one
    state = torch.load(ckpts / "step_0000003.pt", weights_only=True)
    assert state["step"] == 3


def test_truncated_latest_checkpoint_warns_with_its_name(finished_run, hr_dir, capsys):
    latest = finished_run / "checkpoints" / "step_0000002.pt"
    latest.write_bytes(b"")
    args = [a for a in _args(finished_run, hr_dir, "optim.iterations=3", "--resume", str(finished_run)) if a != "-q"]
    code, _, err = _run(capsys, args)
    assert code == 0
    assert any("step_0000002.pt" in line and "trying the previous checkpoint" in line for line in err)


def test_explicit_older_checkpoint_is_refused_when_newer_exist(finished_run, hr_dir, capsys):
    before = _snapshot(finished_run)
    older = finished_run / "checkpoints" / "step_0000001.pt"
    code, _, err = _run(capsys, _args(finished_run, hr_dir, "optim.iterations=3", "--resume", str(older)))
    assert code == 2 and len(err) == 1 and "step_0000002.pt" in err[0] and "--new-run" in err[0]
    assert _snapshot(finished_run) == before


@pytest.mark.parametrize("value", ["-3", "0"])
def test_non_positive_iterations_are_refused(tmp_path, hr_dir, capsys, value):
    code, _, err = _run(capsys, _args(tmp_path / "r", hr_dir, f"optim.iterations={value}"))
    assert code == 2 and len(err) == 1
    assert "tiny_rsd.yaml" in err[0] and "optim.iterations must be a whole number >= 1" in err[0]
    assert not (tmp_path / "r").exists()


def test_output_under_a_regular_file_is_refused_before_loading(tmp_path, hr_dir, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep me")
    code, _, err = _run(capsys, _args(blocker / "run", hr_dir))
    assert code == 2 and len(err) == 1 and str(blocker) in err[0] and "is a file" in err[0] and "-o" in err[0]
    assert blocker.read_text() == "keep me"


def test_unwritable_output_folder_is_refused(tmp_path, hr_dir, capsys, monkeypatch):
    import tempfile

    import rsd_deploy.train.rundir as rundir

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", denied)  # root ignores chmod; simulate EACCES
    code, _, err = _run(capsys, _args(tmp_path / "ro", hr_dir))
    assert code == 2 and len(err) == 1 and "not writable" in err[0] and str(tmp_path / "ro") in err[0]
    assert tempfile.mkstemp is not denied or True


def test_yaml_list_as_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- method: rsd\n- data: {}\n")
    code, _, err = _run(capsys, ["--config", str(bad)])
    assert code == 2 and len(err) == 1 and str(bad) in err[0] and "not a mapping" in err[0]


def test_huge_gt_size_is_one_line(tmp_path, hr_dir, capsys):
    code, _, err = _run(capsys, _args(tmp_path / "r", hr_dir, "data.gt_size=100000"))
    assert code == 2 and len(err) == 1
    assert "tiny_rsd.yaml" in err[0] and "data.gt_size 100000" in err[0] and "data.gt_size=256" in err[0]


def test_export_the_ema_of_an_intermediate_checkpoint(finished_run, capsys):
    from rsd_deploy import load_checkpoint

    ckpt = finished_run / "checkpoints" / "step_0000001.pt"
    code, out, _ = _run(capsys, ["export", str(ckpt), "-q"])
    exported = Path(out.strip())
    assert code == 0 and exported == finished_run / "rsd_ema_model_1.pth"
    official = torch.load(exported, weights_only=True)
    assert any(k.endswith("attn_mask") for k in official) and any(k.endswith("relative_position_index") for k in official)
    ema = torch.load(ckpt, weights_only=True)["models"]["ema"]
    assert all(torch.equal(official[k], v) for k, v in ema.items())
    assert load_checkpoint(exported).config.noise_channels == 1
    code, _, err = _run(capsys, ["export", str(finished_run / "nope.pt")])
    assert code == 3 and len(err) == 1 and "nope.pt" in err[0]


def test_crop_the_unet_cannot_take_is_one_line(tmp_path, hr_dir, capsys):
    code, _, err = _run(capsys, _args(tmp_path / "r", hr_dir, "data.gt_size=32"))
    assert code == 2 and len(err) == 1 and "data.gt_size=64" in err[0]


def test_empty_output_option_is_a_usage_error(hr_dir, capsys):
    code, _, err = _run(capsys, ["--config", str(CONFIG), "-o", ""])
    assert code == 2 and any("-o" in line and "empty" in line for line in err)
