"""Shared test fixtures: paths to ../shared, the official tiny fixtures, and GPU/TensorRT auto-skips."""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def _has_tensorrt() -> bool:
    # find_spec alone is fooled by tensorrt-stubs; ask the TensorRT module for a usable runtime
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        from rsd_deploy.backends.trt_env import tensorrt_status
    except ImportError:
        return False
    return bool(tensorrt_status()[0])


@functools.lru_cache(maxsize=None)
def _loads_openvino(path: Path) -> bool:
    return "openvino" in path.read_text(errors="ignore")


OPENVINO_CHILD_ENV = "RSD_TESTS_OPENVINO_CHILD"
ISOLATED_RUNNER = "test_isolated_runtime_suite.py"


def openvino_test_files(items) -> list:
    return sorted({str(item.path) for item in items
                   if item.path.name != ISOLATED_RUNNER and _loads_openvino(Path(str(item.path)))})


def pytest_collection_modifyitems(config, items):
    # Tests that load OpenVINO run in a child pytest process (tests/test_isolated_runtime_suite.py): once its
    # runtime lives in a process that later forks or spawns (DataLoader workers, the 2-rank DDP test, in-process
    # CLI runs), that process can segfault, which took the whole suite down on CI.
    runner_collected = any(item.path.name == ISOLATED_RUNNER for item in items)
    if runner_collected and os.environ.get(OPENVINO_CHILD_ENV) != "1":
        config._openvino_files = openvino_test_files(items)
        isolated = [item for item in items if str(item.path) in config._openvino_files]
        if isolated:
            config.hook.pytest_deselected(items=isolated)
            items[:] = [item for item in items if str(item.path) not in config._openvino_files]
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_trt = pytest.mark.skip(reason="needs TensorRT and a CUDA GPU (pip install -e .[trt])")
    for item in items:
        if "gpu" in item.keywords and not _has_cuda():
            item.add_marker(skip_gpu)
        if "trt" in item.keywords and not (_has_cuda() and _has_tensorrt()):
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs torch on one intra-op thread: goldens were made that way (reduction order),
    bit-exact resume checks need a fixed order, and CI's two cores are not oversubscribed."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _load(rel: str):
    from rsd_deploy import load_checkpoint

    path = FIXTURES / rel
    if not path.is_file():
        pytest.skip(f"fixture {path} is absent")
    return load_checkpoint(path)


@pytest.fixture(scope="session")
def tiny_unet():
    return _load("unet_tiny/state_dict.pth")


@pytest.fixture(scope="session")
def tiny_rsd():
    return _load("rsd_student_tiny/state_dict.pth")


@pytest.fixture(scope="session")
def tiny_vq():
    return _load("vq_tiny/state_dict.pth")


@pytest.fixture(scope="session")
def export_dir() -> Path:
    """The tiny fixtures exported once per session through ``rsd-export`` (fp32 + fp16 + int8):
    shared by the export, backend and CLI tests (tests/export/onnx_tiny_export.py)."""
    from tests.export.onnx_tiny_export import tiny_export

    out, code, _, err = tiny_export()
    assert code == 0, err
    return out


@pytest.fixture
def native_bf16(monkeypatch):
    """Let bf16 paths run on a CPU without AVX512-BF16/AMX (emulated: slower, same numbers); for tests of what
    bf16 computes, not how fast."""
    from rsd_deploy.backends import capabilities

    flags = capabilities.cpu_flags()
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset(flags | {"avx512_bf16"}))
