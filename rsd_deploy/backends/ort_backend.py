"""ONNX Runtime backend: runs the graphs of an ``rsd-export`` folder (CPU, CUDA or TensorRT EP).

The folder's ``manifest.json`` names the files of each precision, the latent multiple, the
diffusion constants and every graph tensor's role; tensors are bound by role (the names come from
the manifest). The denoiser graph takes the prior sample z_t as ``Backend.denoise`` gets it, with
the timestep T-1 and the input scaling folded in, so this backend runs one-step models only
(``supported_steps = {T-1}``). Tensors cross the interface
as CPU float32 torch tensors; the noise is drawn by the pipeline on the host, identically for every
backend, so a seed gives the same image here as with the torch backend.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from rsd_deploy.backends.base import register_backend
from rsd_deploy.backends.exported import ExportFolderBackend
from rsd_deploy.bundle.specs import Role
from rsd_deploy.errors import BackendUnavailableError, ConfigError, ManifestError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


def providers_for(device: str) -> List[Union[str, tuple]]:
    """'cpu' | 'cuda' | 'cuda:N' | 'tensorrt' | 'tensorrt:N' -> ONNX Runtime provider list (CPU last
    as the fallback for nodes a GPU provider does not take)."""
    import onnxruntime as ort

    kind, _, index = str(device).partition(":")
    device_id = int(index) if index.isdigit() else 0
    available = set(ort.get_available_providers())
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        wanted = ["CUDAExecutionProvider"]
    elif kind in ("tensorrt", "trt"):
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    else:
        raise ConfigError(f"unknown ONNX Runtime device {device!r}; use cpu, cuda[:N] or tensorrt[:N]")
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BackendUnavailableError(f"ONNX Runtime {ort.__version__} has no {', '.join(missing)} here "
                                      f"(available: {', '.join(sorted(available))}); install onnxruntime-gpu "
                                      f"with CUDA, or use --device cpu")
    return [(p, {"device_id": device_id}) for p in wanted] + ["CPUExecutionProvider"]


@dataclass
class OrtOptions:
    """How to run the graphs of an ``rsd-export`` folder through ONNX Runtime.

    export_dir: the export folder (``model_dir`` is an alias, as the pipeline loader passes it).
    precision: fp32 (default), fp16 or int8 (the folder must hold that variant of all three
    graphs). device: cpu (default), cuda[:N] or tensorrt[:N]. intra_op_threads: ORT CPU threads
    (None: ORT's default). verify_files: check every graph's sha256 against the manifest (default
    True). providers: an explicit ORT provider list instead of the one ``device`` implies.
    """

    export_dir: Optional[Union[str, Path]] = None
    precision: str = "fp32"
    device: str = "cpu"
    intra_op_threads: Optional[int] = None
    model_dir: Optional[Union[str, Path]] = None
    verify_files: bool = True
    providers: Optional[Sequence] = None


@register_backend("onnxruntime")
class OrtBackend(ExportFolderBackend):
    """encode / denoise / decode through ONNX Runtime sessions of one precision (see OrtOptions)."""

    name = "onnxruntime"
    Options = OrtOptions

    def __init__(self, options: OrtOptions):
        import onnxruntime as ort

        folder = options.export_dir if options.export_dir is not None else options.model_dir
        precision, providers = options.precision, options.providers
        if folder is None:
            raise ConfigError("the onnxruntime backend needs the export folder (rsd-upscale --onnx DIR)")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r} for ONNX graphs; choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        graphs = self._open_folder(Path(folder), precision, options.verify_files)
        self.providers = list(providers) if providers is not None else providers_for(options.device)
        session_options = ort.SessionOptions()
        if options.intra_op_threads:
            session_options.intra_op_num_threads = int(options.intra_op_threads)
        session_options.log_severity_level = 3  # ORT's optimizer warnings are not actionable for users
        self.sessions: Dict[str, "ort.InferenceSession"] = {}
        for g in ("encoder", "denoiser", "decoder"):
            path = self.export_dir / graphs[g]["variants"][precision]["file"]
            self.sessions[g] = _open_session(ort, path, session_options, self.providers, self.specs[g])
        self._read_manifest_constants()
        logger.info("onnxruntime backend: %s (%s) on %s", self.export_dir, precision,
                    self.sessions["denoiser"].get_providers()[0])

    def _run(self, graph: str, output: str, inputs: Dict[str, Optional[np.ndarray]]) -> torch.Tensor:
        spec = self.specs[graph]
        (out,) = self.sessions[graph].run([spec.name_of(output)], spec.feeds(inputs))
        return torch.from_numpy(out)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 4h, 4w) float32 in [-1, 1] -> (B, 3, h, w) float32 continuous latent (CPU)."""
        self._check(image, 4, "image")
        return self._run("encoder", Role.LATENT, {Role.LR_UPSAMPLED: self._np(image)})

    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x0 (B, 3, h, w) from the unscaled prior sample z_T at step T-1 (folded in the graph); lq in [-1, 1];
        noise (B, noise_channels, h, w) for RSD students."""
        self._check_denoise(z_t, step, noise)
        return self._run("denoiser", Role.X0, {Role.Z_T: self._np(z_t), Role.LQ: self._np(lq),
                                                Role.STUDENT_NOISE: None if noise is None else self._np(noise)})

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) latent -> quantise (fp32 in every variant) -> (B, 3, 4h, 4w) float32, not clamped."""
        self._check(z, 1, "latent")
        return self._run("decoder", Role.SR_IMAGE, {Role.X0: self._np(z)})

    def close(self) -> None:
        self.sessions.clear()


def _open_session(ort, path: Path, options, providers, spec):
    """An ORT session for ``path``; ManifestError (one line) for a file that is no ONNX graph or whose inputs and
    outputs are not those the manifest's spec gives this graph (files swapped or replaced, manifest re-hashed)."""
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # noqa: BLE001 - ORT raises InvalidProtobuf, Fail, RuntimeError... for bad files
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = lines[0][:160] if lines else type(e).__name__
        raise ManifestError(f"{path}: not a loadable ONNX graph ({detail}); re-run rsd-export") from None
    for kind, got, expected in (("inputs", session.get_inputs(), spec.input_names),
                                ("outputs", session.get_outputs(), spec.output_names)):
        if sorted(t.name for t in got) != sorted(expected):
            raise ManifestError(f"{path}: its {kind} {sorted(t.name for t in got)} are not the {spec.name} graph's "
                                f"{sorted(expected)} (files swapped or replaced?); re-run rsd-export")
    return session
