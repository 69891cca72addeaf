"""What the backends that run an ``rsd-export`` folder share (ONNX Runtime, OpenVINO): the manifest's
diffusion constants and model description, the latent-size check, the host tensor conversion."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from rsd_deploy.backends.base import Backend
from rsd_deploy.errors import ConfigError, ShapeError


class ExportFolderBackend(Backend):
    """A Backend over the graphs of an export folder; subclasses set ``export_dir``, ``manifest`` and
    ``precision`` and then call :meth:`_read_manifest_constants`."""

    export_dir: Path
    manifest: Dict[str, Any]
    specs: Dict[str, Any]
    precision: str
    label_prefix = "ONNX"

    def _open_folder(self, folder: Path, graph_precision: str, verify: bool) -> Dict[str, Any]:
        """Open ``folder``'s bundle into ``self.manifest`` / ``self.specs``, check that all three graphs have
        a ``graph_precision`` variant (and their files; sha256 with ``verify``); returns the graph entries."""
        from rsd_deploy.bundle.manifest import Bundle, check_bundle_files

        self.export_dir = Path(folder)
        bundle = Bundle.open(self.export_dir, check_files=False)
        self.manifest = bundle.manifest
        self.specs = bundle.specs()
        graphs = self.manifest["graphs"]
        missing = [g for g in ("encoder", "denoiser", "decoder")
                   if graph_precision not in graphs.get(g, {}).get("variants", {})]
        if missing:
            flag = {"fp16": " --fp16", "int8": " --int8"}.get(graph_precision, "")
            raise ConfigError(f"{self.export_dir} has no {graph_precision} graph for {', '.join(missing)}; "
                              f"re-export with `rsd-export{flag} -o {self.export_dir}` or pick another --precision")
        check_bundle_files(self.export_dir, self.manifest, verify_sha256=verify, precision=graph_precision)
        return graphs

    def _read_manifest_constants(self) -> None:
        diffusion = self.manifest["diffusion"]
        self.steps = int(diffusion["steps"])
        self.timestep = int(diffusion["timestep"])
        self.supported_steps = frozenset({self.timestep})
        self.latent_multiple = int(self.manifest["preprocess"]["latent_multiple"])
        self.noise_channels = int(self.manifest["model"]["noise_channels"])
        self.model_info = self._model_info()

    def _model_info(self):
        from rsd_deploy.models import Schedule
        from rsd_deploy.types import ModelInfo, ModelKind

        kind = ModelKind(self.manifest["model"]["kind"])
        schedule = Schedule.preset(kind.schedule_preset)
        d = self.manifest["diffusion"]
        if schedule.T != self.steps or abs(schedule.prior_std - float(d["prior_std"])) > 1e-6:
            raise ConfigError(f"{self.export_dir}: manifest diffusion constants (T={self.steps}, prior_std "
                              f"{d['prior_std']}) do not match the {kind.value} schedule; re-run rsd-export")
        return ModelInfo(kind=kind, schedule=schedule, input_multiple=self.latent_multiple,
                         noise_channels=self.noise_channels,
                         label=f"{self.label_prefix} {self.export_dir.name} ({self.precision})")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _check(self, t: torch.Tensor, scale: int, what: str) -> None:
        if t.ndim != 4 or t.shape[1] != 3:
            raise ShapeError(f"{what} must be (B, 3, H, W); got {tuple(t.shape)}")
        h, w = t.shape[-2] // scale, t.shape[-1] // scale
        m = self.latent_multiple
        if t.shape[-2] % scale or t.shape[-1] % scale or h % m or w % m:
            raise ShapeError(f"{what} latent size {h}x{w} is not a multiple of {m}; pad the input to a multiple "
                             f"of {m} LR pixels")

    @staticmethod
    def _np(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())

    def _check_denoise(self, z_t: torch.Tensor, step: int, noise) -> None:
        if step != self.timestep:
            raise ShapeError(f"the exported denoiser runs only step {self.timestep} (one-step graph, t folded in); "
                             f"got step {step}: use the torch backend for multi-step sampling")
        if (noise is not None) != bool(self.noise_channels):
            raise ShapeError(f"this denoiser takes {self.noise_channels} noise channel(s); "
                             f"{'pass' if self.noise_channels else 'do not pass'} a noise map")
        self._check(z_t, 1, "z_t")
