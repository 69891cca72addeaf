"""Where the networks come from: one place that turns a model source (checkpoints, the embedded
demo model, an ONNX folder, a TensorRT engine folder) into a backend plus what the pipeline needs
to know about it. The export and TensorRT work extends ``resolve_backend`` here, not the CLI.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

from rsd_deploy.backends.base import Backend, create_backend
from rsd_deploy.errors import BackendUnavailableError, CheckpointError, ConfigError
from rsd_deploy.types import ModelInfo, ModelKind

logger = logging.getLogger(__name__)

#: runtimes that run the ONNX graphs of an export folder (--onnx DIR --runtime NAME); the first is the default
ONNX_RUNTIMES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class ModelSource:
    """Which networks to run and on what.

    ``checkpoint`` + ``vq``: official-format or our safetensors files; none of the four paths: the
    embedded demo model. ``onnx_dir`` / ``engine_dir``: exported graphs / TensorRT engines (their
    backends describe the model themselves, see ``resolve_backend``). ``device`` None: CUDA when
    available, else CPU.
    """

    checkpoint: Optional[Path] = None
    vq: Optional[Path] = None
    model: Optional[ModelKind] = None
    onnx_dir: Optional[Path] = None
    engine_dir: Optional[Path] = None
    device: Optional[str] = None
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 | auto (resolve_precision)
    runtime: Optional[str] = None  # for onnx_dir: onnxruntime (default) | openvino
    threads: Optional[int] = None  # CPU threads of the runtime (None: its default)

    def validate(self) -> None:
        if self.runtime is not None and self.runtime not in ONNX_RUNTIMES:
            raise ConfigError(f"unknown --runtime {self.runtime!r}; choose one of {', '.join(ONNX_RUNTIMES)}")
        if self.precision == "int8" and self.onnx_dir is None and self.engine_dir is None:
            raise ConfigError("--precision int8 runs exported Q/DQ graphs: pass --onnx DIR (from rsd-export --int8) "
                              "or --engine DIR; PyTorch runs fp32, bf16 or fp16")
        if self.runtime is not None and self.onnx_dir is None:
            raise ConfigError(f"--runtime {self.runtime} runs exported ONNX graphs; pass --onnx DIR too")
        runtimes = [n for n, v in (("--onnx", self.onnx_dir), ("--engine", self.engine_dir)) if v is not None]
        if len(runtimes) > 1:
            raise ConfigError("--onnx and --engine exclude each other; pick one runtime")
        if runtimes and (self.checkpoint is not None or self.vq is not None):
            raise ConfigError(f"{runtimes[0]} runs exported networks; drop --checkpoint/--vq")
        if self.vq is not None and self.checkpoint is None:
            raise ConfigError("--vq needs --checkpoint (the UNet/student weights) as well")
        if self.checkpoint is not None and self.vq is None:
            raise ConfigError("--checkpoint needs --vq PATH too (the VQ-f4 autoencoder, e.g. autoencoder_vq_f4.pth)")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _kind_for_unet(unet: Any, requested: Optional[ModelKind], checkpoint: Path) -> ModelKind:
    noise_channels = int(unet.config.noise_channels)
    if noise_channels:
        if requested not in (None, ModelKind.RSD):
            raise ConfigError(f"{checkpoint} is an RSD student (noise input channels); use --model rsd or omit --model")
        return ModelKind.RSD
    if requested is None:
        raise ConfigError(f"{checkpoint}: the weights do not tell SinSR from ResShift v1/v3; "
                          f"pass --model sinsr, resshift-v1 or resshift-v3")
    if requested is ModelKind.RSD:
        raise ConfigError(f"{checkpoint} has no noise input channels, so it is not an RSD student; "
                          f"pass --model sinsr, resshift-v1 or resshift-v3")
    return requested


def load_torch_models(source: ModelSource) -> Tuple[Any, Any, ModelKind, str]:
    """(unet, vq, kind, label) from checkpoints, or from the embedded demo model when none is given."""
    from rsd_deploy.checkpoint import load_checkpoint
    from rsd_deploy.models import UNetSwin, VQAutoencoder

    if source.checkpoint is None:
        try:
            from rsd_deploy.default_model import load_default_models
        except ModuleNotFoundError:
            raise CheckpointError("this install has no embedded demo model; pass --checkpoint PATH --vq PATH") from None
        unet, vq, info = load_default_models()
        kind = ModelKind(info["kind"])
        if source.model is not None and source.model is not kind:
            raise ConfigError(f"the embedded demo model is {kind.value}; --model {source.model.value} "
                              f"applies only with --checkpoint")
        label = str(info.get("label", "embedded demo model"))
        # the label says "demo": the user must know this is not the published model
        logger.info("no --checkpoint given: using the embedded demo model (%s, %s)", label, kind.value)
        return unet, vq, kind, label

    assert source.vq is not None  # validate() guarantees it
    unet = load_checkpoint(source.checkpoint)
    vq = load_checkpoint(source.vq)
    if isinstance(unet, VQAutoencoder) and isinstance(vq, UNetSwin):
        raise ConfigError(f"--checkpoint {source.checkpoint} is the autoencoder and --vq {source.vq} the UNet; "
                          f"swap them")
    if not isinstance(unet, UNetSwin):
        raise CheckpointError(f"--checkpoint {source.checkpoint} is not a ResShift/SinSR/RSD UNet; "
                              f"pass the UNet or student weights")
    if not isinstance(vq, VQAutoencoder):
        raise CheckpointError(f"--vq {source.vq} is not a VQ autoencoder; pass autoencoder_vq_f4.pth")
    kind = _kind_for_unet(unet, source.model, source.checkpoint)
    label = f"{source.checkpoint.name} + {source.vq.name}"
    return unet, vq, kind, label


def resolve_precision(precision: str, runtime: str, device: str) -> str:
    """``auto`` -> the fastest precision ``runtime`` runs natively on ``device`` (capabilities.auto_precision),
    logged with the reason; any other value is returned as is."""
    if precision != "auto":
        return precision
    from rsd_deploy.backends.capabilities import auto_precision

    chosen, why = auto_precision(runtime, device)
    logger.info("precision auto -> %s on %s %s (%s)", chosen, runtime, device, why)
    return chosen


def _runtime_backend(name: str, folder: Path, source: ModelSource) -> Tuple[Backend, ModelInfo]:
    """ONNX Runtime / OpenVINO / TensorRT: the backend is created from its folder and must expose
    ``model_info`` (a ModelInfo read from the export manifest)."""
    device = source.device or default_device()
    if name == "openvino" and device == "cuda":
        device = "cpu"  # OpenVINO runs on Intel devices; the CUDA default does not apply to it
    precision = resolve_precision(source.precision, name, device)
    options = {}
    if source.threads:
        options["threads" if name == "openvino" else "intra_op_threads"] = source.threads
    try:
        backend = create_backend(name, model_dir=folder, device=device, precision=precision, **options)
    except ModuleNotFoundError as e:
        raise BackendUnavailableError(f"the {name} backend is not available in this install ({e}); "
                                      f"install the extra it needs or use the torch backend") from None
    info = getattr(backend, "model_info", None)
    if not isinstance(info, ModelInfo):
        raise BackendUnavailableError(f"the {name} backend does not describe its model (no model_info); "
                                      f"update rsd-deploy")
    return backend, info


def resolve_backend(source: ModelSource) -> Tuple[Backend, ModelInfo]:
    """The single backend choice point: model source -> (backend, model info)."""
    from rsd_deploy.models import Schedule

    source.validate()
    if source.onnx_dir is not None:
        return _runtime_backend(source.runtime or ONNX_RUNTIMES[0], source.onnx_dir, source)
    if source.engine_dir is not None:
        return _runtime_backend("tensorrt", source.engine_dir, source)
    unet, vq, kind, label = load_torch_models(source)
    schedule = Schedule.preset(kind.schedule_preset)
    device = source.device or default_device()
    if source.threads:
        import torch

        torch.set_num_threads(int(source.threads))
    backend = create_backend("torch", unet=unet, vq=vq, schedule=schedule, device=device,
                             precision=resolve_precision(source.precision, "torch", device))
    info = ModelInfo(kind=kind, schedule=schedule, input_multiple=int(unet.config.input_multiple),
                     noise_channels=int(unet.config.noise_channels), label=label)
    return backend, info
