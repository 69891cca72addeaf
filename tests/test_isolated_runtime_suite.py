"""Runs the tests that load OpenVINO in a child pytest process (see tests/conftest.py for why)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import OPENVINO_CHILD_ENV, ROOT


def test_runtime_tests_pass_in_their_own_process(request):
    files = getattr(request.config, "_openvino_files", [])
    if not files:
        pytest.skip("no test module loads the isolated runtime in this selection")
    env = dict(os.environ, **{OPENVINO_CHILD_ENV: "1"})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"isolated runtime tests failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
