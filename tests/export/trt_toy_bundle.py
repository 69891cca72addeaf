"""A small rsd-export folder for the TensorRT unit tests: toy graphs with the real specs' I/O.

The three graphs are tiny stand-ins (a conv or two each) exported with the real
``encoder_spec/denoiser_spec/decoder_spec`` names, dynamic axes and profiles, plus an fp16 variant
made by onnxconverter-common, and a manifest written by ``rsd_deploy.bundle.manifest``. They make
the build and runtime wrappers testable in seconds; the real graphs are exercised in tests/gpu.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from torch import nn
import torch.nn.functional as F

from rsd_deploy.bundle import manifest as mf
from rsd_deploy.bundle.specs import ExportSpec, graph_specs

MULTIPLE = 16
NOISE_CHANNELS = 1
PRIOR_STD = 1.98  # kappa * sqrt(eta_T) of the v1 schedule, as the real denoiser graph folds in


class ToyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(F.avg_pool2d(image, 4))


class ToyDenoiser(nn.Module):
    """x0 = f(z_t, lq, noise): the same contract as the real graph (z_t: the host's prior sample)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6 + NOISE_CHANNELS, 3, 3, padding=1)

    def forward(self, z_t: torch.Tensor, lq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(torch.cat([0.45 * z_t, lq, noise], dim=1)))


class ToyDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(latent), scale_factor=4.0, mode="nearest")


def toy_specs() -> Dict[str, ExportSpec]:
    return graph_specs(MULTIPLE, NOISE_CHANNELS)


def toy_modules(seed: int = 0) -> Dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {"encoder": ToyEncoder().eval(), "denoiser": ToyDenoiser().eval(), "decoder": ToyDecoder().eval()}


def _export(module: nn.Module, spec: ExportSpec, path: Path) -> None:
    feeds = spec.dummy_inputs(1, MULTIPLE, MULTIPLE)
    args = tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)
    torch.onnx.export(module, args, str(path), input_names=list(spec.input_names),
                      output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes(),
                      opset_version=17, dynamo=False)


def make_toy_bundle(out_dir: Path, fp16: bool = True) -> Dict[str, nn.Module]:
    """Write encoder/denoiser/decoder(.fp16).onnx and manifest.json into ``out_dir``; returns the modules."""
    import onnx
    from onnxconverter_common import float16

    from rsd_deploy.export.onnx_export import DiffusionConstants
    from rsd_deploy.models import Schedule

    out_dir.mkdir(parents=True, exist_ok=True)
    specs, modules = toy_specs(), toy_modules()
    graphs = {}
    for name, spec in specs.items():
        _export(modules[name], spec, out_dir / f"{name}.onnx")
        variants = {"fp32": mf.variant_entry(out_dir, f"{name}.onnx", [], 17, {"tool": "torch.onnx.export",
                                                                             "kept_fp32": ["*"]})}
        if fp16:
            half = float16.convert_float_to_float16(onnx.load(str(out_dir / f"{name}.onnx")), keep_io_types=True)
            onnx.save(half, str(out_dir / f"{name}.fp16.onnx"))
            variants["fp16"] = mf.variant_entry(out_dir, f"{name}.fp16.onnx", [], 17,
                                                {"tool": "onnxconverter-common", "kept_fp32": []})
        graphs[name] = {"spec": spec.to_dict(), "variants": variants}
    constants = DiffusionConstants.from_schedule(Schedule.preset("v1"))
    manifest = mf.build_manifest(kind="rsd", demo=True, noise_channels=NOISE_CHANNELS, unet_checkpoint=None,
                                 vq_checkpoint=None, constants=constants, latent_multiple=MULTIPLE, graphs=graphs)
    mf.write_manifest(out_dir, manifest)
    return modules
