"""The TensorRT modules type-check with mypy against tensorrt-stubs (.ci/typecheck_trt.py).

The stub fixes are unit-tested by default; the mypy run itself takes ~20-60 s of CPU (and fetches
tensorrt-stubs into a temp dir when they are not installed), so it is marked slow; CI runs
``python .ci/typecheck_trt.py`` as its own step.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# load the script by path (.ci/ is not a package)
_spec = importlib.util.spec_from_file_location("typecheck_trt", ROOT / ".ci" / "typecheck_trt.py")
typecheck_trt = importlib.util.module_from_spec(_spec)
sys.modules["typecheck_trt"] = typecheck_trt
_spec.loader.exec_module(typecheck_trt)


def test_stub_fixes_are_mechanical():
    text = "\n".join([
        "import tensorrt_libs as tensorrt_libs",
        "    def get_workspace_size(self, in: list[PluginTensorDesc], out: list[PluginTensorDesc]) -> int:",
        "    def add_scale_nd(self, input: ITensor, mode: ScaleMode, shift: Weights = None, channel_axis: int) -> X:",
        "    def f(self, a: int = 1, *, b: int) -> None:",
        "    def g(self, x: dict[str, tuple[int, int]]) -> None:",
    ])
    fixed = typecheck_trt.patch_stub_text(text).splitlines()
    assert fixed[0] == "    def get_workspace_size(self, in_: list[PluginTensorDesc], out: list[PluginTensorDesc]) -> int:"
    assert fixed[1].endswith("shift: Weights = None, channel_axis: int = ...) -> X:")
    assert fixed[2] == "    def f(self, a: int = 1, *, b: int) -> None:"  # keyword-only may follow defaults
    assert fixed[3] == "    def g(self, x: dict[str, tuple[int, int]]) -> None:"
    for line in fixed:  # each fixed signature now parses
        compile(line.strip() + " ...", "<stub>", "exec")
    with pytest.raises(SyntaxError):
        compile(text.splitlines()[1].strip() + " ...", "<stub>", "exec")


@pytest.mark.slow
def test_trt_modules_are_mypy_clean(monkeypatch, capsys):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("needs mypy (pip install -e .[dev])")
    monkeypatch.chdir(ROOT)
    status = typecheck_trt.run_mypy(list(typecheck_trt.DEFAULT_TARGETS))
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"Success: no issues found in {len(typecheck_trt.DEFAULT_TARGETS)} source files" in out
