"""Fixtures for the TensorRT wrapper tests (FakeTensorRT recording test double, toy bundle).

Imported by the tests/export/test_trt_*.py modules (not a conftest: tests/export is shared)."""
from __future__ import annotations

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


def install_fake(monkeypatch, version: str = "10.13.0.35", flavour: str = "10", gpu=GPU):
    """Put a FakeTensorRT in sys.modules and pretend a CUDA GPU is present (for identity only)."""
    from rsd_deploy.export import trt
    from tests.export.trt_fake import FakeTensorRT

    fake = FakeTensorRT(version=version, flavour=flavour)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    identity = trt.GpuIdentity(gpu[0], gpu[1])
    monkeypatch.setattr(trt, "current_gpu", lambda device_index=0: identity)
    return fake


@pytest.fixture
def fake_trt(monkeypatch):
    """FakeTensorRT 10.13 (recording test double, NOT TensorRT) on a pretend H100."""
    return install_fake(monkeypatch)
