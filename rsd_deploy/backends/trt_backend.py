"""TensorRT backend: runs the three engines that ``rsd-export --build-engine DIR`` wrote.

Each engine is checked against this machine from its sidecar *before* it is deserialised (other
TensorRT version, GPU or ONNX graph -> EngineMismatchError with the rebuild command). Memory is
torch CUDA tensors, allocated once per input shape; every call sets the input shapes and the
address of every I/O tensor and runs ``execute_async_v3`` on a private torch CUDA stream with the
backend's device current (:class:`rsd_deploy.backends.trt_runtime.EngineRunner`). Optional CUDA
graphs are re-captured whenever the input shapes change.

The denoiser graph has the one-step timestep T-1 and the input scaling folded in, so this backend
runs only step T-1 (``supported_steps``). It takes the prior sample z_t that ``denoise`` receives
from the sampler as it is; tensors are bound by role (names from the manifest).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from rsd_deploy.backends import trt_env
from rsd_deploy.backends.base import Backend, register_backend
from rsd_deploy.backends.trt_plans import PRECISION_FALLBACK, PlanRuntime, check_engine, rebuild_command
from rsd_deploy.backends.trt_runtime import EngineRunner
from rsd_deploy.bundle.manifest import Bundle
from rsd_deploy.bundle.specs import Role
from rsd_deploy.errors import BackendUnavailableError, ConfigError, ManifestError, ShapeError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


def _require_cuda_device(device: Union[str, torch.device]) -> torch.device:
    """'cuda' / 'cuda:N' -> torch.device; TensorRT needs a CUDA GPU."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; TensorRT runs on cuda or cuda:N") from None
    if dev.type != "cuda":
        raise ConfigError(f"TensorRT engines run on a CUDA GPU, not {device!r}; use --device cuda")
    cuda = trt_env.CUDA
    if not cuda.is_available():
        raise BackendUnavailableError("no CUDA GPU (torch.cuda.is_available() is False); TensorRT needs one")
    index = dev.index if dev.index is not None else cuda.current_device()
    if index >= cuda.device_count():
        raise ConfigError(f"device {device!r} does not exist: this machine has {cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def _select_engine(manifest: Mapping[str, Any], submodel: str, precision: str, folder: Path) -> Tuple[str, Dict[str, Any]]:
    """(precision actually used, manifest engine entry): the requested one, else the next higher."""
    engines = (manifest.get("engines") or {}).get(submodel, {})
    for candidate in PRECISION_FALLBACK[precision]:
        if candidate in engines:
            if candidate != precision:
                log.info("%s: no %s engine, using the %s one", submodel, precision, candidate)
            return candidate, dict(engines[candidate])
    raise BackendUnavailableError(
        f"{folder} has no {precision} TensorRT engine for the {submodel} (engines: "
        f"{sorted(engines) or 'none'}); build them with `{rebuild_command(folder)}`"
    )


@dataclass
class TensorRTOptions:
    """How to run the engines of an ``rsd-export`` folder.

    engine_dir: the folder with manifest.json and the engines (``model_dir`` is an alias, as the
    pipeline loader passes it). precision: fp16 (default), fp32 or int8; a submodel without that
    engine uses the next higher one. device: cuda (default) or cuda:N. cuda_graphs: replay a
    captured CUDA graph while the input shapes stay the same, re-capturing when they change
    (default False). lean_runtime: the lean runtime library for plans built with
    ``exclude_lean_runtime`` (default ``libnvinfer_lean.so.<major>`` of the TensorRT that built
    them, from the library search path).
    """

    engine_dir: Optional[PathLike] = None
    precision: str = "fp16"
    device: Union[str, torch.device] = "cuda"
    cuda_graphs: bool = False
    model_dir: Optional[PathLike] = None
    lean_runtime: Optional[PathLike] = None


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    """encode / denoise / decode through TensorRT engines; tensors in and out are float32 NCHW
    (see TensorRTOptions)."""

    name = "tensorrt"
    Options = TensorRTOptions

    def __init__(self, options: TensorRTOptions) -> None:
        engine_dir, model_dir, precision = options.engine_dir, options.model_dir, options.precision
        device, cuda_graphs = options.device, options.cuda_graphs
        folder = engine_dir if engine_dir is not None else model_dir
        if folder is None:
            raise ConfigError("the tensorrt backend needs the engine folder (--engine DIR)")
        if precision not in PRECISION_FALLBACK:
            raise ConfigError(f"unknown precision {precision!r} for TensorRT; choose fp32, fp16 or int8")
        self.folder = Path(folder)
        self.precision = precision
        self._device = _require_cuda_device(device)
        tensorrt_version = trt_env.tensorrt_version()  # BackendUnavailableError without TensorRT
        gpu = trt_env.current_gpu(self._device.index or 0)

        bundle = Bundle.open(self.folder)
        self.manifest = bundle.manifest
        diffusion = self.manifest["diffusion"]
        self.timestep = int(diffusion["timestep"])
        self.supported_steps = frozenset({self.timestep})
        self.model_info = self._model_info()

        self.runners: Dict[str, EngineRunner] = {}
        self.engine_precisions: Dict[str, str] = {}
        self.specs = {name: bundle.spec(name) for name in ("encoder", "denoiser", "decoder")}
        try:
            for submodel in ("encoder", "denoiser", "decoder"):
                used, entry = _select_engine(self.manifest, submodel, precision, self.folder)
                graph = self.manifest["graphs"][submodel]["variants"].get(used)
                plan_path = self.folder / entry["file"]
                # stale/foreign engines are reported here, before TensorRT sees the bytes
                sidecar = check_engine(plan_path, tensorrt_version=tensorrt_version, gpu=gpu,
                                       onnx_sha256=graph["sha256"] if graph else None)
                runner = EngineRunner(
                    plan_path.read_bytes(), self._device, name=f"{submodel}.{used}",
                    needs=PlanRuntime.from_sidecar(sidecar), lean_runtime=options.lean_runtime,
                    cuda_graphs=cuda_graphs,
                )
                self._check_io(submodel, runner)
                self.runners[submodel] = runner
                self.engine_precisions[submodel] = used
        except BaseException:
            self.close()
            raise
        log.info("TensorRT %s backend on %s (%s): %s", precision, gpu.name, gpu.sm, self.engine_precisions)

    def _model_info(self) -> Any:
        from rsd_deploy.models import Schedule
        from rsd_deploy.types import ModelInfo, ModelKind

        model = self.manifest["model"]
        try:
            kind = ModelKind(model["kind"])
        except ValueError:
            raise ManifestError(f"{self.folder}: unknown model kind {model['kind']!r}; re-run rsd-export") from None
        if kind.multistep:
            raise ManifestError(f"{self.folder}: the engines hold a one-step denoiser but the manifest says "
                                f"{kind.value}; re-run rsd-export")
        schedule = Schedule.preset(kind.schedule_preset)
        if schedule.T - 1 != self.timestep:
            raise ManifestError(f"{self.folder}: denoiser timestep {self.timestep} does not match the "
                                f"{kind.schedule_preset} schedule (T={schedule.T}); re-run rsd-export")
        return ModelInfo(kind=kind, schedule=schedule,
                         input_multiple=int(self.manifest["preprocess"]["latent_multiple"]),
                         noise_channels=int(model["noise_channels"]),
                         label=f"TensorRT engines in {self.folder}")

    def _check_io(self, submodel: str, runner: EngineRunner) -> None:
        spec = self.specs[submodel]
        if sorted(runner.input_names) != sorted(spec.input_names) or \
                sorted(runner.output_names) != sorted(spec.output_names):
            raise ManifestError(
                f"{runner.name}: engine I/O {runner.input_names}->{runner.output_names} does not match the "
                f"manifest spec {list(spec.input_names)}->{list(spec.output_names)}; "
                f"rebuild with `{rebuild_command(self.folder)}`"
            )

    @property
    def device(self) -> torch.device:
        return self._device

    def _run(self, submodel: str, feeds: Dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.runners[submodel].run(feeds)
        (output,) = outputs.values()
        return output.float()

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 4h, 4w) image in [-1, 1] -> (B, 3, h, w) float32 latent on the GPU."""
        return self._run("encoder", self.specs["encoder"].feeds({Role.LR_UPSAMPLED: image}))

    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x0 from the unscaled z_T at step T-1 (the only step the graph has); shapes (B, C, h, w)."""
        if step != self.timestep:
            raise ConfigError(f"the TensorRT denoiser engine runs only step {self.timestep} (one-step graph), "
                              f"not step {step}; use the torch backend for multi-step sampling")
        spec = self.specs["denoiser"]
        if (noise is None) != all(t.role != Role.STUDENT_NOISE for t in spec.inputs):
            raise ShapeError("the denoiser engine " + ("needs an RSD noise map" if noise is None else
                             "has no noise input (not an RSD student)") + "; check the model kind of the export")
        return self._run("denoiser", spec.feeds({Role.Z_T: z_t, Role.LQ: lq, Role.STUDENT_NOISE: noise}))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) latent -> (B, 3, 4h, 4w) float32 image, not clamped."""
        return self._run("decoder", self.specs["decoder"].feeds({Role.X0: z}))

    def close(self) -> None:
        for runner in getattr(self, "runners", {}).values():
            runner.close()
        self.runners = {}
