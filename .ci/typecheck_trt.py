#!/usr/bin/env python
"""Type-check the TensorRT module(s) with mypy against `tensorrt-stubs`.

`tensorrt-stubs` (10.9 to 10.13) ships generated stubs that mypy cannot parse as they are: a
parameter named ``in`` (a keyword), parameters without defaults after defaulted ones, an import of
``tensorrt_libs`` (a wheel-only module) and no ``py.typed`` marker. This script copies the
installed stubs into a temporary folder, fixes exactly those mechanical defects (no type is
changed), and runs mypy with that folder on its path.

The stubs describe TensorRT 10.x. Members removed in 11.x (``BuilderFlag.FP16``,
``device_memory_size``, ...) still type-check here, so mypy cannot catch 11.x breakage; our code
reaches those through ``hasattr``/``getattr`` and the unit tests drive an 11.x-shaped test double.

Usage:  python .ci/typecheck_trt.py [paths...]   (default: the TensorRT modules)
Needs:  mypy. The stubs are taken from the environment when installed, else fetched with
        `pip install --no-deps --target <temp dir> tensorrt-stubs==10.13.0.35.1`: keep them out of
        the environment, where they make `import tensorrt` succeed without TensorRT.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Sequence

REPO = Path(__file__).resolve().parents[1]
STUBS_PIN = "tensorrt-stubs==10.13.0.35.1"  # 10.9-10.13 all need the fixes below; 10.13 matches our floor best
DEFAULT_TARGETS = (
    "rsd_deploy/backends/trt_env.py",
    "rsd_deploy/backends/trt_plans.py",
    "rsd_deploy/backends/trt_runtime.py",
    "rsd_deploy/backends/trt_backend.py",
    "rsd_deploy/export/trt_build.py",
    "rsd_deploy/export/trt_inspect.py",
    "rsd_deploy/export/engine_build.py",
)
MYPY_CONFIG = """\
[mypy]
python_version = 3.10
mypy_path = {stubs}
follow_imports = silent
disallow_untyped_defs = True
warn_unused_ignores = True
warn_redundant_casts = True
no_implicit_optional = True
# cv2, onnx, polygraphy ...: untyped third-party modules; tensorrt comes from the patched stubs
ignore_missing_imports = True

# the generated stubs shadow builtins (a module-level `bool`) and miss annotations: check our
# code against them, not the stubs themselves
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
"""


def _split_params(text: str) -> List[str]:
    """Split a parameter list at top-level commas (brackets may nest)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _fix_def(line: str) -> str:
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if match is None:
        return line
    head, params, tail = match.groups()
    fixed, seen_default = [], False
    for param in _split_params(params):
        name = param.split(":", 1)[0].split("=", 1)[0].strip()
        if name == "in":
            param = "in_" + param[2:]
        if param.startswith("*"):
            seen_default = False  # keyword-only parameters may follow defaults
        elif "=" in param:
            seen_default = True
        elif seen_default:
            param += " = ..."
        fixed.append(param)
    return head + ", ".join(fixed) + tail


def patch_stub_text(text: str) -> str:
    """Fix the defects mypy cannot parse; every other line is left as generated."""
    lines = []
    for line in text.splitlines():
        if re.match(r"^import tensorrt_libs\b", line):
            continue
        lines.append(_fix_def(line))
    return "\n".join(lines) + "\n"


def _stub_site(scratch: Path) -> Path:
    """The folder holding tensorrt/ and tensorrt_bindings/ stubs: installed, or fetched into ``scratch``."""
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).resolve().parents[1]
    target = scratch / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                             STUBS_PIN], capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: could not fetch {STUBS_PIN} ({tail}); install it with pip --no-deps --target")
    return target


def prepare_stubs(dest: Path, scratch: Path) -> Path:
    """Copy tensorrt-stubs into ``dest`` with the fixes applied; returns ``dest``."""
    site = _stub_site(scratch)
    for package in ("tensorrt", "tensorrt_bindings"):
        for stub in sorted((site / package).glob("*.pyi")):
            target = dest / package / stub.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(patch_stub_text(stub.read_text()))
    return dest


def run_mypy(targets: Sequence[str]) -> int:
    from mypy import api

    with tempfile.TemporaryDirectory(prefix="trt-stubs-") as tmp:
        stubs = prepare_stubs(Path(tmp) / "stubs", Path(tmp))
        config = Path(tmp) / "mypy.ini"
        config.write_text(MYPY_CONFIG.format(stubs=stubs))
        args = ["--config-file", str(config), "--cache-dir", str(Path(tmp) / "cache"), *targets]
        stdout, stderr, status = api.run(args)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    import os

    os.chdir(REPO)
    sys.exit(run_mypy(sys.argv[1:] or [t for t in DEFAULT_TARGETS if (REPO / t).exists()]))
