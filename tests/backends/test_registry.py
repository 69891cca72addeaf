"""Backend registry: lazy registration, options dataclasses, one-line errors."""
import dataclasses
import importlib

import pytest

from rsd_deploy.backends import base
from rsd_deploy.backends.torch_backend import TorchBackend, TorchOptions
from rsd_deploy.errors import BackendUnavailableError, ConfigError
from rsd_deploy.models import Schedule


def test_unknown_backend_is_refused():
    with pytest.raises(BackendUnavailableError, match="unknown backend 'nosuch'; choose one of torch, "):
        base.create_backend("nosuch")


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


@pytest.mark.parametrize("name", ["torch", "torch-fast", "onnxruntime"])
def test_every_table_entry_registers_a_class_with_an_options_dataclass(name):
    cls = base.backend_class(name)
    assert cls.name == name and dataclasses.is_dataclass(cls.Options)
    assert cls.__module__ == f"rsd_deploy.backends.{base.BACKEND_MODULES[name][0]}"


def test_backend_is_built_from_its_options(tiny_rsd, tiny_vq, native_bf16):
    v1 = Schedule.preset("v1")
    from_fields = base.create_backend("torch", unet=tiny_rsd, vq=tiny_vq, schedule=v1, precision="bf16")
    from_options = base.create_backend("torch", TorchOptions(tiny_rsd, tiny_vq, v1), precision="bf16")
    assert isinstance(from_fields, TorchBackend) and from_fields.precision == from_options.precision == "bf16"
    assert TorchOptions(tiny_rsd, tiny_vq, v1).device == "cpu"  # documented default


def test_unknown_option_and_wrong_options_type_are_refused(tiny_rsd, tiny_vq):
    with pytest.raises(ConfigError, match="the torch backend has no option threads; its options are channels_last, device, "):
        base.create_backend("torch", unet=tiny_rsd, vq=tiny_vq, schedule=Schedule.preset("v1"), threads=2)
    from rsd_deploy.backends.ort_backend import OrtOptions

    with pytest.raises(ConfigError, match="takes TorchOptions, not OrtOptions"):
        base.create_backend("torch", OrtOptions(export_dir="x"))
