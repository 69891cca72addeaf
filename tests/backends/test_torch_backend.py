"""TorchBackend: the reference backend (input scaling, precisions, errors)."""
from __future__ import annotations

import pytest
import torch

from rsd_deploy.backends.base import create_backend
from rsd_deploy.backends.torch_backend import TorchBackend, TorchOptions
from rsd_deploy.errors import BackendUnavailableError, ConfigError, ShapeError
from rsd_deploy.models import Schedule


@pytest.fixture(scope="module")
def v1():
    return Schedule.preset("v1")


def test_registered_as_torch(tiny_rsd, tiny_vq, v1):
    backend = create_backend("torch", unet=tiny_rsd, vq=tiny_vq, schedule=v1)
    assert isinstance(backend, TorchBackend) and backend.device == torch.device("cpu")
    assert backend.supported_steps is None  # any step: multi-step ResShift runs here


def test_denoise_scales_the_input_by_the_schedule(tiny_rsd, tiny_vq, v1):
    backend = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1))
    gen = torch.Generator().manual_seed(0)
    z, lq, n = (torch.randn(2, c, 16, 32, generator=gen) for c in (3, 3, 1))
    for step in (14, 3):
        with torch.no_grad():
            expected = tiny_rsd(z / float(v1.in_std[step]), torch.tensor([step, step]), lq, n)
        torch.testing.assert_close(backend.denoise(z, step, lq, n), expected, atol=1e-6, rtol=0)
    assert float(v1.in_std[14]) == pytest.approx(2.2182, abs=1e-4)


def test_encode_decode_are_the_autoencoder(tiny_rsd, tiny_vq, v1):
    backend = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1))
    img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = backend.encode(img)
    assert z.shape == (1, 3, 16, 16) and z.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(z, tiny_vq.encode(img), atol=0, rtol=0)
        torch.testing.assert_close(backend.decode(z), tiny_vq.decode(z), atol=1e-6, rtol=0)


def test_bf16_on_cpu_is_close_and_quantises_in_fp32(tiny_rsd, tiny_vq, v1, monkeypatch, native_bf16):
    fp32 = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1))
    bf16 = TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1, precision="bf16"))
    gen = torch.Generator().manual_seed(2)
    z, lq, n = (torch.randn(1, c, 16, 16, generator=gen) for c in (3, 3, 1))
    a, b = fp32.denoise(z, 14, lq, n), bf16.denoise(z, 14, lq, n)
    assert b.dtype == torch.float32
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()  # bf16 has ~3 significant digits

    seen = []
    original = bf16.vq.quantize_latent  # the module the backend runs (a channels-last copy for bf16 on the CPU)

    def spy(latent):
        seen.append((torch.is_autocast_enabled("cpu"), latent.dtype))
        return original(latent)

    monkeypatch.setattr(bf16.vq, "quantize_latent", spy)
    bf16.decode(z)
    assert seen == [(False, torch.float32)]


def test_precision_and_device_errors(tiny_rsd, tiny_vq, v1):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1, device="cpu", precision="fp16"))
    with pytest.raises(ConfigError, match="unknown precision"):
        TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1, precision="int4"))
    with pytest.raises(ConfigError):
        TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1, device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1, device="cuda"))


def test_denoise_input_errors(tiny_rsd, tiny_unet, tiny_vq, v1):
    z = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ShapeError, match="pass a noise map"):
        TorchBackend(TorchOptions(tiny_rsd, tiny_vq, v1)).denoise(z, 14, z)
    with pytest.raises(ShapeError, match="do not pass a noise map"):
        TorchBackend(TorchOptions(tiny_unet, tiny_vq, v1)).denoise(z, 14, z, torch.zeros(1, 1, 16, 16))
    with pytest.raises(ShapeError, match="outside the schedule"):
        TorchBackend(TorchOptions(tiny_unet, tiny_vq, v1)).denoise(z, 15, z)
