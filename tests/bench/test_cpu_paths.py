"""The CPU paths of issue 11 in rsd-bench and rsd-upscale: backend names, precision auto, int8 end to end,
the official-code flag's errors."""
from __future__ import annotations

import numpy as np
import pytest

from rsd_deploy.backends import capabilities
from rsd_deploy.bench.contenders import parse_backend_variant, unavailable_reason
from rsd_deploy.errors import BackendUnavailableError, ConfigError, RSDError


def test_openvino_and_auto_backend_names(monkeypatch):
    v = parse_backend_variant("ov-int8", "cpu")
    assert (v.runtime, v.precision, v.key) == ("openvino", "int8", "ov-int8")
    assert parse_backend_variant("ort-int8", "cpu").runtime == "onnxruntime"
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert parse_backend_variant("torch-auto", "cpu").key == "torch-bf16"
    assert parse_backend_variant("ov-auto", "cpu").key == "ov-bf16"
    assert parse_backend_variant("ort-auto", "cpu").key == "ort-fp32"
    assert parse_backend_variant("torch-auto", "cuda").key == "torch-fp16"
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"avx2"}))
    assert parse_backend_variant("torch-auto", "cpu").key == "torch-fp32"
    assert "no native bf16" in unavailable_reason(parse_backend_variant("ov-bf16", "cpu"))
    with pytest.raises(RSDError, match="OpenVINO on the CPU runs fp32, bf16 or int8"):
        parse_backend_variant("ov-fp16", "cpu")
    with pytest.raises(RSDError, match="int8 is ONNX Runtime / OpenVINO / TensorRT only"):
        parse_backend_variant("torch-int8", "cpu")


def test_torch_compile_is_a_cpu_contender_and_torch_fast_is_not():
    assert unavailable_reason(parse_backend_variant("torch-fast-bf16", "cpu")).startswith("the fast path")
    reason = unavailable_reason(parse_backend_variant("torch-compile-fp32", "cpu"))
    assert reason is None


def test_official_repo_errors_are_one_line(tmp_path):
    from rsd_deploy.bench.official import check_repo, import_official
    from rsd_deploy.bench.runner import BenchConfig

    with pytest.raises(ConfigError, match="folder not found"):
        BenchConfig(official_repo=str(tmp_path / "nope")).validate()
    with pytest.raises(ConfigError, match="is not a ResShift checkout"):
        check_repo(tmp_path)
    for f in ("models/unet.py", "models/script_util.py", "ldm/models/autoencoder.py"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("import rsd_missing_official_dependency\n" if f.endswith("unet.py") else "")
    with pytest.raises(BackendUnavailableError, match="needs the package 'rsd_missing_official_dependency'") as info:
        import_official(tmp_path)
    assert "\n" not in str(info.value) and "pip install rsd_missing_official_dependency" in str(info.value)


def test_cli_official_repo_missing_folder_exits_2(tmp_path, capsys):
    from rsd_deploy.cli.bench import main

    with pytest.raises(SystemExit) as info:
        main(["--official-repo", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "--arch", "tiny"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "folder not found" in err[0]


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
