"""The CPU paths of issue 11 in rsd-bench: backend names, precision auto, the official-code flag's errors."""
from __future__ import annotations

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
