"""Issue 14, rsd-export / rsd-bench: bad output folders fail in one line before any model is loaded, bad
weights are blamed on the weights (not on the export), SIGTERM removes the staging folder, and hand-edited but
re-hashed manifests give one line."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch

from rsd_deploy.cli import bench, export
from rsd_deploy.cli.common import run_command
from rsd_deploy.cli.upscale import cli as upscale_cli
from rsd_deploy.errors import ExportError, ManifestError
from rsd_deploy.fileio import sha256_file
from tests.cli.conftest import RSD, VQ
from tests.pipeline.helpers import random_rgb

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_long_work(monkeypatch):
    """Loading models or measuring anything fails the test: output checks must come first."""
    def forbidden(*a, **k):
        raise AssertionError("the long work started before the output folder was checked")

    monkeypatch.setattr("rsd_deploy.export.exporter.export_models", forbidden)
    monkeypatch.setattr("rsd_deploy.bench.benchmark_and_report", forbidden)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("command", [export, bench])
def test_output_under_a_regular_file_fails_before_the_long_work(tmp_path, capsys, no_long_work, command):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    args = ["-o", str(blocker / "out")] + (["--checkpoint", str(RSD), "--vq", str(VQ)] if command is export else [])
    assert run_command(command.cli, args) == 2
    assert one_error_line(capsys) == (f"error: -o {blocker / 'out'}: {blocker} is a file, so no folder can be created "
                                      f"under it; choose another -o folder")
    assert blocker.read_text() == "keep me"
    assert run_command(command.cli, ["-o", str(blocker)]) == 2  # -o naming the file itself
    assert f"{blocker}' is a file" in one_error_line(capsys)


@pytest.mark.parametrize("command", [export, bench])
def test_empty_output_folder_is_a_usage_error(tmp_path, capsys, monkeypatch, no_long_work, command):
    monkeypatch.chdir(tmp_path)
    assert run_command(command.cli, ["-o", ""]) == 2
    assert "an empty path would write into the current folder; pass a folder name" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", [export, bench])
def test_unwritable_output_folder_fails_before_the_long_work(tmp_path, capsys, no_long_work, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert run_command(command.cli, ["-o", str(locked / "out")]) == 2
        assert f"{locked} is not writable" in one_error_line(capsys)
    finally:
        locked.chmod(0o700)


def test_export_of_nan_weights_blames_the_weights_and_leaves_no_folder(tmp_path, capsys):
    state = torch.load(RSD, weights_only=True)
    w = state["out.2.weight"].clone()
    w[0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(dict(state, **{"out.2.weight": w}), bad)
    before = bad.read_bytes()
    assert run_command(export.cli, ["-q", "--checkpoint", str(bad), "--vq", str(VQ), "-o", str(tmp_path / "out")]) == 3
    line = one_error_line(capsys)
    assert line.startswith(f"error: {bad}: 1 tensor(s) hold NaN/Inf: out.2.weight (1 NaN)") and "report" not in line
    assert not (tmp_path / "out").exists() and bad.read_bytes() == before


def test_a_failed_export_leaves_no_empty_folder(tmp_path, capsys, monkeypatch):
    def failing_export(*a, **k):
        raise ExportError("encoder.onnx: simulated failure")

    monkeypatch.setattr("rsd_deploy.export.exporter.export_graph", failing_export)
    code = run_command(export.cli, ["-q", "--checkpoint", str(RSD), "--vq", str(VQ), "-o", str(tmp_path / "out"),
                                    "--opt-shape", "1x16x16", "--no-engines"])
    assert code == ExportError.exit_code and "simulated failure" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_sigterm_removes_the_export_staging_folder(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "rsd_deploy.cli.export", "-q", "--checkpoint", str(RSD),
                             "--vq", str(VQ), "-o", str(out), "--opt-shape", "1x16x16", "--no-engines", "--fp16"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(p.name.startswith(".rsd-export-") for p in out.iterdir())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no staging folder appeared (exit {proc.returncode}): {proc.communicate()[1]}")
        time.sleep(0.02)
    time.sleep(0.5)  # well inside the export, as `timeout` or `docker stop` would hit it
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: rsd-export: terminated (SIGTERM); nothing half-written was kept"
    assert not out.exists() or not any(p.name.startswith(".rsd-export-") for p in out.iterdir())


# --- hand-edited manifests whose sha256 entries were updated to match (so the hash check passes) -------------

def _edited_bundle(export_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(export_dir, dst)  # the session's tiny export (tests/conftest.py), copied to be edited
    return dst


def _rehash(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    for graph in manifest["graphs"].values():
        for variant in graph["variants"].values():
            variant["sha256"] = sha256_file(bundle / variant["file"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _upscale_with(bundle: Path, tmp_path: Path, capsys) -> tuple:
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), random_rgb(16, 16))
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    code = run_command(upscale_cli, ["-q", str(img), "-o", str(tmp_path / "out"), "--onnx", str(bundle)])
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before
    assert not (tmp_path / "out" / "a_x4.png").exists()
    return code, one_error_line(capsys)


def test_garbage_graph_with_a_matching_hash_is_one_line(export_dir, tmp_path, capsys):
    bundle = _edited_bundle(export_dir, tmp_path)
    (bundle / "encoder.onnx").write_bytes(b"\x08\x07garbage protobuf" * 64)
    _rehash(bundle)
    code, line = _upscale_with(bundle, tmp_path, capsys)
    assert code == ManifestError.exit_code
    assert line.startswith(f"error: {bundle / 'encoder.onnx'}: not a loadable ONNX graph (") and "re-run rsd-export" in line


def test_swapped_graphs_with_matching_hashes_are_one_line(export_dir, tmp_path, capsys):
    bundle = _edited_bundle(export_dir, tmp_path)
    enc, dec = (bundle / "encoder.onnx").read_bytes(), (bundle / "decoder.onnx").read_bytes()
    (bundle / "encoder.onnx").write_bytes(dec)
    (bundle / "decoder.onnx").write_bytes(enc)
    _rehash(bundle)
    code, line = _upscale_with(bundle, tmp_path, capsys)
    assert code == ManifestError.exit_code
    assert line == (f"error: {bundle / 'encoder.onnx'}: its inputs ['latent'] are not the encoder graph's ['image'] "
                    f"(files swapped or replaced?); re-run rsd-export")


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(graphs="oops"), "does not match schema 2.0 at $.graphs: 'oops' is not of type 'object'"),
    (lambda m: m["graphs"]["decoder"].update(variants=["decoder.onnx"]),
     "at $.graphs.decoder.variants: ['decoder.onnx'] is not of type 'object'; re-export the bundle"),
])
def test_hand_edited_manifest_structure_is_one_line(export_dir, tmp_path, capsys, edit, words):
    bundle = _edited_bundle(export_dir, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    code, line = _upscale_with(bundle, tmp_path, capsys)
    assert code == ManifestError.exit_code and words in line and str(bundle / "manifest.json") in line, line

