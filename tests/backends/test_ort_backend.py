"""ONNX Runtime backend: same images as the torch backend for the same seed, manifest-driven setup,
one-line errors."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from rsd_deploy.backends.base import create_backend
from rsd_deploy.backends.ort_backend import OrtBackend, OrtOptions
from rsd_deploy.errors import BackendUnavailableError, ConfigError, ManifestError, ShapeError
from tests.conftest import DATA


def _lr_image() -> np.ndarray:
    """A real 40 x 24 LR crop (not a multiple of 16: exercises padding and two tiles)."""
    bgr = cv2.imread(str(DATA / "imagenet_val_sr" / "lq" / sorted(p.name for p in (DATA / "imagenet_val_sr" / "lq")
                                                                    .iterdir())[0]))
    return np.ascontiguousarray(bgr[:24, :40, ::-1])


@pytest.mark.parametrize("tile", [None, 16])
def test_same_images_as_torch_backend_with_the_same_seed(export_dir, tiny_rsd, tiny_vq, tile):
    from rsd_deploy.models import Schedule
    from rsd_deploy.pipeline.sr_pipeline import SRPipeline
    from rsd_deploy.types import ModelInfo, ModelKind, TileConfig

    ort_backend = create_backend("onnxruntime", model_dir=export_dir, device="cpu", precision="fp32")
    info = ort_backend.model_info
    assert info == ModelInfo(kind=ModelKind.RSD, schedule=Schedule.preset("v1"), input_multiple=16,
                             noise_channels=1, label=info.label)
    torch_backend = create_backend("torch", unet=tiny_rsd, vq=tiny_vq, schedule=info.schedule)
    tiling = TileConfig(tile=tile, overlap=8 if tile else 0)
    rgb = _lr_image()
    got = SRPipeline(ort_backend, info, tiling, seed=5).upscale_array(rgb)
    ref = SRPipeline(torch_backend, info, tiling, seed=5).upscale_array(rgb)
    assert got.shape == ref.shape == (96, 160, 3)
    assert float(np.abs(got - ref).max()) <= 1e-3  # the decoder's fp32 bound (spec atol)
    other_seed = SRPipeline(ort_backend, info, tiling, seed=6).upscale_array(rgb)
    assert float(np.abs(other_seed - got).max()) > 1e-2  # the seed matters: noise really flows in


def test_fp16_and_int8_variants_load_and_run(export_dir):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    z = {p: OrtBackend(OrtOptions(export_dir, precision=p)).encode(image) for p in ("fp32", "fp16", "int8")}
    assert z["fp32"].shape == (1, 3, 16, 16)
    assert 0 < float((z["fp16"] - z["fp32"]).abs().max()) < 0.05
    torch.testing.assert_close(z["int8"], z["fp32"], atol=0, rtol=0)  # the encoder's int8 variant is fp32


def test_one_step_only_and_shape_errors(export_dir):
    backend = OrtBackend(OrtOptions(export_dir))
    assert backend.supported_steps == frozenset({14})
    z, lq, noise = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)
    assert backend.denoise(z, 14, lq, noise).shape == (1, 3, 16, 16)
    with pytest.raises(ShapeError, match="only step 14"):
        backend.denoise(z, 3, lq, noise)
    with pytest.raises(ShapeError, match="noise"):
        backend.denoise(z, 14, lq, None)
    with pytest.raises(ShapeError, match="multiple of 16"):
        backend.decode(torch.zeros(1, 3, 16, 24))


def test_folder_errors_are_one_line(export_dir, tmp_path):
    with pytest.raises(ManifestError, match="rsd-export"):
        OrtBackend(OrtOptions(tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["graphs"].values():
        entry["variants"].pop("fp16")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="--fp16"):
        OrtBackend(OrtOptions(copy, precision="fp16"))
    with (copy / "decoder.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        OrtBackend(OrtOptions(copy))
    with pytest.raises(ConfigError, match="precision"):
        OrtBackend(OrtOptions(export_dir, precision="bf16"))


def test_missing_gpu_provider_is_reported(export_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendUnavailableError, match="--device cpu"):
        OrtBackend(OrtOptions(export_dir, device="cuda"))


def test_graphs_are_bound_by_role_not_by_name(tmp_path):
    """Every graph tensor renamed (graphs and manifest): the backend reads the names from the
    manifest's specs by role and computes the same thing."""
    from tests.export import embedkit_helpers as kit

    for folder, prefix in (("plain", ""), ("renamed", "t_")):
        kit.write_synthetic_bundle(tmp_path / folder, multiple=16, noise_channels=1, io_prefix=prefix)
    plain, renamed = (OrtBackend(OrtOptions(tmp_path / f)) for f in ("plain", "renamed"))
    assert renamed.specs["denoiser"].input_names == ("t_z_t", "t_lq", "t_noise")
    gen = torch.Generator().manual_seed(1)
    image, z, lq, noise = (torch.randn(1, c, s, s, generator=gen) for c, s in ((3, 64), (3, 16), (3, 16), (1, 16)))
    torch.testing.assert_close(renamed.encode(image), plain.encode(image), atol=0, rtol=0)
    torch.testing.assert_close(renamed.denoise(z, 14, lq, noise), plain.denoise(z, 14, lq, noise), atol=0, rtol=0)
    torch.testing.assert_close(renamed.decode(z), plain.decode(z), atol=0, rtol=0)
