"""Fixtures for the TensorRT wrapper tests (FakeTensorRT recording test double, toy bundle).

Imported by the tests/export/test_trt_*.py modules (not a conftest: tests/export is shared)."""
from __future__ import annotations

import gc
import shutil
import sys
from pathlib import Path

import pytest

GPU = ("NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture(scope="session")
def _toy_bundle_template(tmp_path_factory) -> Path:
    from tests.export.trt_toy_bundle import make_toy_bundle

    folder = tmp_path_factory.mktemp("toy_bundle")
    make_toy_bundle(folder)
    return folder


@pytest.fixture
def toy_bundle(_toy_bundle_template, tmp_path) -> Path:
    """A fresh copy of the toy rsd-export folder (fp32 + fp16 graphs, manifest.json)."""
    folder = tmp_path / "bundle"
    shutil.copytree(_toy_bundle_template, folder)
    return folder


def install_fake(monkeypatch, version: str = "10.13.0.35", flavour: str = "10", gpu=GPU, gpus=None):
    """Put a FakeTensorRT in sys.modules and its FakeCuda device model behind the runtime's CUDA seam.

    ``gpus``: [(name, (major, minor), integrated)], default one discrete ``gpu``. The previous
    FakeCuda's violations are kept for the ``no_cuda_violations`` check."""
    from rsd_deploy.backends import trt_env
    from tests.export.cuda_fake import FakeCuda
    from tests.export.trt_fake import FakeTensorRT

    cuda = FakeCuda(gpus or [(gpu[0], tuple(gpu[1]), False)])
    fake = FakeTensorRT(version=version, flavour=flavour, cuda=cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_env, "CUDA", cuda)
    _INSTALLED.append(cuda)
    return fake


_INSTALLED: list = []


@pytest.fixture(autouse=True)
def no_cuda_violations():
    """Fail the test when the code broke a rule the device model checks (use-after-free, wrong
    device, host pointer, stale graph, ...): a real GPU would not say so as clearly."""
    _INSTALLED.clear()
    yield
    gc.collect()  # run the FakeCuda finalizers of everything the test dropped
    found = [v for cuda in _INSTALLED for v in cuda.violations]
    _INSTALLED.clear()
    assert not found, "FakeCuda violations:\n" + "\n".join(found)


@pytest.fixture
def fake_trt(monkeypatch):
    """FakeTensorRT 10.13 (recording test double, NOT TensorRT) on a pretend H100."""
    return install_fake(monkeypatch)
