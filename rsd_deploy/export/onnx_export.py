"""FP32 ONNX export of the three deployable graphs (VQ encoder, one-step denoiser, VQ decoder).

Exporter choice (tried both on the tiny fixtures, torch 2.13, onnxscript 0.7): the TorchScript
exporter (``dynamo=False``) at opset 17 is the default. With the model's shape-generic Swin code it
exports the three graphs in seconds and they match PyTorch within 1e-5 at the export shape, at a
non-square shape and at batch 2 (full size too: benchmarks/results/export_fullsize_cpu.md); its
``dynamic_axes`` map one-to-one onto :meth:`ExportSpec.dynamic_axes`. The dynamo exporter
(``exporter="dynamo"``, library only) specialised the batch axis of a batch-1 example
("Constraints violated (batch)"), emitted a ``Split(num_outputs=...)`` that ``onnx.checker``
rejects at opset 17, and took minutes per graph on the same machine. Opset 17 is the newest opset
whose GroupNorm lowering (Reshape + InstanceNormalization) every TensorRT 10.x parser and ONNX
Runtime accept; 18 is allowed (``--opset 18``) but adds nothing this model uses.

Graphs whose weights exceed ``EXTERNAL_DATA_THRESHOLD_BYTES`` are written with their weights in
one ``<file>.data`` beside the graph (the full-size UNet is ~475 MB), so no file nears the 2 GB
protobuf limit and the graphs stay diffable.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from rsd_deploy.errors import ExportError
from rsd_deploy.bundle.specs import ExportSpec, ShapeProfile, graph_specs

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = (17, 18)
EXPORTERS = ("torchscript", "dynamo")
EXTERNAL_DATA_THRESHOLD_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class DiffusionConstants:
    """What the one-step denoiser folds in and what a host app needs to prepare its inputs."""

    steps: int
    timestep: int  # T - 1, folded into the graph
    kappa: float
    sqrt_eta_T: float
    input_scale: float  # 1 / sqrt(kappa^2 eta_T + 1)
    prior_std: float  # kappa * sqrt_eta_T

    @classmethod
    def from_schedule(cls, schedule) -> "DiffusionConstants":
        T = int(schedule.T)
        sqrt_eta_T = float(schedule.sqrt_eta[T - 1])
        kappa = float(schedule.kappa)
        return cls(steps=T, timestep=T - 1, kappa=kappa, sqrt_eta_T=sqrt_eta_T,
                   input_scale=float(1.0 / schedule.in_std[T - 1]), prior_std=kappa * sqrt_eta_T)


class EncoderGraph(nn.Module):
    """image (B, 3, 4h, 4w) float32 in [-1, 1] -> latent (B, 3, h, w) continuous z_y."""

    def __init__(self, vq: Any) -> None:
        super().__init__()
        self.vq = vq

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(image)


class DenoiserGraph(nn.Module):
    """One-step student: (z_t, lq[, noise]) -> x0, all (B, C, h, w) float32.

    z_t is the unscaled prior sample z_T = z_y + kappa*sqrt(eta_T)*eps that the host's sampler draws
    (``Schedule.prior``), i.e. exactly what ``Backend.denoise`` receives. The input scaling
    1/sqrt(kappa^2 eta_T + 1) is computed in the graph and the timestep T-1 is a constant (folded
    with the time embedding).
    """

    def __init__(self, unet: Any, constants: DiffusionConstants) -> None:
        super().__init__()
        self.unet = unet
        self.constants = constants
        self.input_scale = float(constants.input_scale)
        # shape (1,): broadcasts over the batch inside the UNet and lets the exporter fold the
        # whole time-embedding MLP into constants
        self.register_buffer("timestep", torch.tensor([constants.timestep], dtype=torch.int64), persistent=False)
        self.noise_channels = int(getattr(unet.config, "noise_channels", 0))

    def forward(self, z_t: torch.Tensor, lq: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = z_t * self.input_scale
        return self.unet(x, self.timestep, lq, noise)


class DecoderGraph(nn.Module):
    """latent (B, 3, h, w) -> quantise (fp32 distances) -> image (B, 3, 4h, 4w), not clamped."""

    def __init__(self, vq: Any) -> None:
        super().__init__()
        self.vq = vq

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(latent)


def build_specs(unet_config, profile: Optional[ShapeProfile] = None) -> Dict[str, ExportSpec]:
    """The three specs for one model. All graphs share the UNet's latent multiple so one tile size
    (and one engine profile) serves the whole pipeline."""
    return graph_specs(int(unet_config.input_multiple), int(getattr(unet_config, "noise_channels", 0)), profile)


def graph_modules(unet: nn.Module, vq: nn.Module, constants: DiffusionConstants) -> Dict[str, nn.Module]:
    return {
        "encoder": EncoderGraph(vq).eval(),
        "denoiser": DenoiserGraph(unet, constants).eval(),
        "decoder": DecoderGraph(vq).eval(),
    }


def torch_inputs(spec: ExportSpec, feeds: Dict[str, np.ndarray]) -> Tuple[torch.Tensor, ...]:
    """Positional torch inputs in the spec's order from a feed dict."""
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in spec.input_names)


@dataclass
class ExportedGraph:
    """One written ONNX file (and its external data files, relative names)."""

    name: str
    path: Path
    external_data: List[str] = field(default_factory=list)
    opset: int = DEFAULT_OPSET
    exporter: str = "torchscript"
    export_seconds: float = 0.0
    export_shape: Tuple[int, int, int] = (1, 64, 64)

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size + sum((self.path.parent / f).stat().st_size for f in self.external_data)


def initializer_bytes(model) -> int:
    import onnx.numpy_helper  # noqa: F401  (import check only)

    total = 0
    for init in model.graph.initializer:
        if init.raw_data:
            total += len(init.raw_data)
        else:
            n = int(np.prod(init.dims)) if init.dims else 1
            total += 4 * n
    return total


def save_onnx(model, path: Path, external_data: Optional[bool] = None) -> List[str]:
    """Write ``model`` to ``path`` (weights in ``<name>.data`` when large); returns external files.

    The caller writes into a staging folder and moves files into place (atomic per file).
    """
    import onnx

    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = path.name + ".data"
    if (path.parent / data_name).exists():
        (path.parent / data_name).unlink()  # onnx appends to an existing data file
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path.parent / data_name, 0o666 & ~umask)  # onnx creates it 0600; it is a deliverable
        return [data_name]
    onnx.save_model(model, str(path))
    return []


def export_graph(module: nn.Module, spec: ExportSpec, path: Path, *, export_shape: Tuple[int, int, int],
                 opset: int = DEFAULT_OPSET, exporter: str = "torchscript",
                 external_data: Optional[bool] = None) -> ExportedGraph:
    """Export ``module`` (one of the *Graph wrappers) to ``path`` with the spec's names and dynamic axes.

    The result is constant-folded by polygraphy (shape subgraphs fold away where static), checked
    with ``onnx.checker`` and saved; weights go to external data when large.
    """
    import onnx

    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported; use one of {', '.join(map(str, SUPPORTED_OPSETS))}")
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    batch, h, w = export_shape
    spec.check_latent_size(h, w)
    feeds = spec.dummy_inputs(batch, h, w, seed=0)
    args = torch_inputs(spec, feeds)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected
                if exporter == "torchscript":
                    torch.onnx.export(module, args, str(raw), dynamo=False, opset_version=opset,
                                      input_names=list(spec.input_names), output_names=list(spec.output_names),
                                      dynamic_axes=spec.dynamic_axes(), do_constant_folding=True)
                else:
                    program = torch.onnx.export(module, args, dynamo=True, opset_version=opset,
                                                input_names=list(spec.input_names),
                                                output_names=list(spec.output_names),
                                                dynamic_shapes=_dynamo_shapes(spec), optimize=True)
                    if program is None:
                        raise ExportError(f"{spec.name}: the dynamo exporter returned no program")
                    program.save(str(raw), external_data=True)
        except Exception as exc:  # exporter errors are long multi-line traces: keep the first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{spec.name}: torch.onnx.export ({exporter}) failed: {first}; "
                              f"try --exporter {'dynamo' if exporter == 'torchscript' else 'torchscript'}") from exc
        model = onnx.load(str(raw))
        model = simplify(fold_constants(model))
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise ExportError(f"{spec.name}: exported graph fails onnx.checker: {exc}") from exc
    files = save_onnx(model, path, external_data)
    seconds = time.perf_counter() - start
    onnx.checker.check_model(str(path), full_check=True)  # path form: resolves external data, runs shape inference
    logger.info("exported %s (%s, opset %d) in %.1f s", path.name, exporter, opset, seconds)
    return ExportedGraph(spec.name, path, files, opset, exporter, seconds, (batch, h, w))


def _dynamo_shapes(spec: ExportSpec) -> Dict[str, Dict[int, object]]:
    """torch.export dims: batch free, H and W multiples of the spec's multiple (shared by all inputs)."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=64)
    h_blocks = Dim("h_blocks", min=1, max=1024)
    w_blocks = Dim("w_blocks", min=1, max=1024)
    h = spec.multiple * h_blocks
    w = spec.multiple * w_blocks
    shapes: Dict[str, Dict[int, object]] = {}
    for t in spec.inputs:
        shapes[t.name] = {0: batch, 2: h * t.scale if t.scale != 1 else h, 3: w * t.scale if t.scale != 1 else w}
    return shapes


def fold_constants(model):
    """Fold constant subgraphs (shape arithmetic, the time embedding of the folded timestep) with
    polygraphy, the same pass as ``polygraphy surgeon sanitize --fold-constants``."""
    try:
        from polygraphy.backend.onnx import fold_constants as pg_fold
    except ImportError:  # polygraphy is optional at run time; unfolded graphs are still valid
        logger.warning("polygraphy not installed: constant folding skipped")
        return model
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # folding runs ORT: its optimizer notices are noise here
    with _quiet_polygraphy():
        return pg_fold(model, num_passes=2, size_threshold=None, error_ok=True)


def simplify(model):
    """onnxslim: drop the no-op Casts of the fp32 graph (the models' ``x.float()`` around GroupNorm
    and the quantiser), dead nodes and duplicate shape subgraphs. The FP16 converter needs the
    no-op Casts gone (it would retype them to fp16 and break the blocked norms' inputs)."""
    try:
        import onnxslim
    except ImportError as exc:
        raise ExportError("onnxslim is not installed; pip install onnxslim (the graphs need its cleanup)") from exc
    try:
        return onnxslim.slim(model)
    except Exception as exc:
        raise ExportError(f"onnxslim failed on the exported graph ({type(exc).__name__}: {exc})") from exc


class _quiet_polygraphy:
    """Lower polygraphy's own logger to errors inside a block (it prints to stdout otherwise)."""

    def __enter__(self):
        from polygraphy.logger import G_LOGGER

        self._old = G_LOGGER.module_severity
        G_LOGGER.module_severity = G_LOGGER.ERROR
        return self

    def __exit__(self, *exc) -> None:
        from polygraphy.logger import G_LOGGER

        G_LOGGER.module_severity = self._old


def replace_into(staged: Path, final_dir: Path, names: Sequence[str]) -> None:
    """Move staged files into ``final_dir`` with os.replace (atomic per file, same filesystem)."""
    final_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(staged / name, final_dir / name)
