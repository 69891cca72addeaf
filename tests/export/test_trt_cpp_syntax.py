"""The C++ TensorRT runner (export/cpp/src/trt_runner.cpp) compiles against the TensorRT/CUDA API it
uses, without the SDK: ``tests/export/trt_cpp_stubs`` declares exactly those calls with the
signatures of TensorRT 10.12+/11.x and CUDA 12/13 (declarations only: nothing links or runs; the
GPU test tests/gpu/test_cpp_tensorrt.py builds and runs it for real).

The source checks below pin the issue-16 fixes that a syntax check cannot see; they are a floor,
not a proof of behaviour."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "export" / "cpp" / "src" / "trt_runner.cpp"
STUBS = Path(__file__).resolve().parent / "trt_cpp_stubs"


def _compiler():
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++/clang++)")
    if not any((Path(p) / "nlohmann" / "json.hpp").is_file() for p in ("/usr/include", "/usr/local/include")):
        pytest.skip("nlohmann-json headers absent (apt-get install nlohmann-json3-dev)")
    return compiler


def test_trt_runner_compiles_against_the_tensorrt_api():
    proc = subprocess.run([_compiler(), "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                           "-DRSD_WITH_TENSORRT", f"-I{STUBS}", f"-I{ROOT / 'export' / 'cpp' / 'include'}",
                           str(SOURCE)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr


def test_trt_runner_source_keeps_the_issue_16_fixes():
    text = SOURCE.read_text()
    run_body = text[text.index("Tensor run(const std::vector<const Tensor*>& inputs) override"):text.index(" private:")]
    assert "cudaSetDevice(device_)" in run_body  # per call, not only in the constructor
    assert "setEngineHostCodeAllowed(true)" in text and "loadRuntime(" in text  # portable plans
    # every setTensorAddress result is checked (one checked wrapper, called for inputs and all outputs)
    assert len(re.findall(r"setTensorAddress\(", text)) == 1 and "if (!context_->setTensorAddress" in text
    assert "engine_outputs_" in run_body  # every engine output gets an address
    assert "for (const Tensor* t : inputs) key +=" in run_body  # shape key from all inputs
    capture = text[text.index("void capture()"):text.index("void give_up_graphs")]
    assert "throw" not in capture and "cudaStreamEndCapture" in capture  # a failed capture falls back
