"""rsd-upscale on the ONNX runtimes: --precision int8 end to end (ONNX Runtime, OpenVINO), --runtime openvino
without the package, --precision auto naming its choice.

(Kept out of tests/bench: the upscale CLI sets glibc's malloc options in the test process, which the
bench timer's RSS test must not inherit.)"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from rsd_deploy.backends import capabilities
from tests.export.onnx_tiny_export import tiny_export


@pytest.fixture(scope="module")
def export_dir():
    pytest.importorskip("onnxruntime")
    out, code, _, _ = tiny_export()
    assert code == 0
    return out


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_upscale_precision_int8_runs_on_onnx_runtimes(tmp_path, capsys, runtime):
    pytest.importorskip("onnxruntime")
    if runtime == "openvino":
        pytest.importorskip("openvino")
    import cv2

    from rsd_deploy.cli.common import run_command
    from rsd_deploy.cli.upscale import cli
    from tests.export.onnx_tiny_export import tiny_export

    export_dir, code, _, _ = tiny_export()
    assert code == 0
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    code = run_command(cli, [str(img), "-o", str(tmp_path / "out"), "--onnx", str(export_dir), "--runtime", runtime,
                             "--precision", "int8", "--threads", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    assert cv2.imread(str(tmp_path / "out" / "x_x4.png")).shape == (80, 96, 3)


def test_upscale_precision_int8_without_graphs_is_a_config_error(tmp_path, capsys):
    import cv2

    from rsd_deploy.cli.common import run_command
    from rsd_deploy.cli.upscale import cli

    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((16, 16, 3), np.uint8))
    code = run_command(cli, [str(img), "-o", str(tmp_path / "out"), "--precision", "int8", "-q"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--precision int8 runs exported Q/DQ graphs" in lines[0]


def test_cli_missing_openvino_exits_7_with_one_line(export_dir, tmp_path, monkeypatch, capsys):
    import cv2

    from rsd_deploy.cli.common import run_command
    from rsd_deploy.cli.upscale import cli

    monkeypatch.setitem(sys.modules, "openvino", None)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.full((16, 16, 3), 128, np.uint8))
    code = run_command(cli, [str(img), "-o", str(tmp_path / "out"), "--onnx", str(export_dir), "--runtime",
                             "openvino", "-q"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 7 and len(lines) == 1 and "pip install rsd-deploy[openvino]" in lines[0]
    assert not (tmp_path / "out" / "x_x4.png").exists()


def test_cli_precision_auto_names_its_choice(export_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    import cv2

    from rsd_deploy.cli.common import run_command
    from rsd_deploy.cli.upscale import cli

    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"avx2"}))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.full((16, 16, 3), 100, np.uint8))
    code = run_command(cli, [str(img), "-o", str(tmp_path / "out"), "--onnx", str(export_dir), "--runtime",
                             "openvino", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "precision auto -> fp32 on openvino cpu" in err and (tmp_path / "out" / "x_x4.png").is_file()
