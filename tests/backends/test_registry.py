"""Backend registry: lazy registration and a one-line error when an optional runtime is missing."""
import importlib

import pytest

from rsd_deploy.backends import base
from rsd_deploy.errors import BackendUnavailableError


def test_unknown_backend_is_refused():
    with pytest.raises(BackendUnavailableError, match="unknown backend 'openvino'"):
        base.create_backend("openvino")


def test_missing_runtime_package_names_the_extra(monkeypatch):
    monkeypatch.delitem(base._REGISTRY, "onnxruntime", raising=False)
    real = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == "rsd_deploy.backends.ort_backend":
            raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(BackendUnavailableError) as info:
        base.create_backend("onnxruntime", export_dir="x")
    assert "'onnxruntime'" in str(info.value) and "rsd-deploy[onnx]" in str(info.value)
