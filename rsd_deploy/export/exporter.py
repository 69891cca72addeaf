"""``export_models(config)``: the one library call behind ``rsd-export``.

checkpoints (or the embedded default) -> three FP32 ONNX graphs, each parity-checked against
PyTorch at the export shape and two other shapes -> optional FP16 and INT8 graphs -> accuracy report
on real images -> lint -> ``manifest.json``. Everything is written into a staging folder inside the
output folder and moved into place file by file at the end (os.replace), so a failed export never
leaves half-written graphs under their final names, and the manifest is written last.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from rsd_deploy.errors import ConfigError, ExportError, ShapeError
from rsd_deploy.bundle import manifest as mf
from rsd_deploy.fileio import atomic_write_json, atomic_write_text, sigterm_as_exception
from rsd_deploy.export.onnx_export import (DEFAULT_OPSET, DiffusionConstants, ExportedGraph, build_specs, export_graph,
                                           graph_modules, save_onnx)
from rsd_deploy.bundle.specs import SUBMODELS, Role, ShapeProfile, decoder_spec, default_profile
from rsd_deploy.export.parity import ParityReport, draw_inputs
from rsd_deploy.export.int8 import INT8_GRAPHS, KEPT_FP32_REASON
from rsd_deploy.export.validate import ParityResult
from rsd_deploy.types import ModelKind

logger = logging.getLogger(__name__)

Shape3 = Tuple[int, int, int]
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ExportConfig:
    """What to export and how. Shapes are (batch, latent h, latent w); latent px == LR px.

    Models come from ``unet``/``vq_model`` (already loaded), else ``checkpoint`` + ``vq`` files,
    else the embedded default model.
    """

    out_dir: Path
    checkpoint: Optional[Path] = None
    vq: Optional[Path] = None
    model: Optional[str] = None  # rsd | sinsr | resshift-v1 | resshift-v3 (needed when weights cannot tell)
    fp16: bool = False
    int8: bool = False
    calib_dirs: Sequence[Path] = ()  # empty: shared/data imagenet_val_sr/lq + realset65
    calib_count: int = 16
    int8_graphs: Sequence[str] = INT8_GRAPHS  # the others' int8 variant is their fp32 graph (see int8.py)
    opset: int = DEFAULT_OPSET
    exporter: str = "torchscript"
    min_shape: Optional[Shape3] = None
    opt_shape: Optional[Shape3] = None
    max_shape: Optional[Shape3] = None
    export_shape: Optional[Shape3] = None  # default: opt
    verify_shapes: Optional[Sequence[Shape3]] = None  # default: export shape + two others (one non-square)
    accuracy_count: int = 4  # real LR crops for the accuracy report
    external_data: Optional[bool] = None  # None: only for graphs with > 100 MB of weights
    unet: Optional[nn.Module] = field(default=None, repr=False)
    vq_model: Optional[nn.Module] = field(default=None, repr=False)
    demo: Optional[bool] = None  # manifest model.demo; default: True for the embedded model
    seed: int = 0
    progress: bool = False

    def validate(self) -> None:
        if self.model is not None and self.model not in ModelKind.choices():
            raise ConfigError(f"unknown --model {self.model!r}; choose one of {', '.join(ModelKind.choices())}")
        if (self.checkpoint is None) != (self.vq is None) and self.unet is None:
            raise ConfigError("--checkpoint and --vq go together: pass both (UNet/student and VQ-f4) or neither")
        if (self.unet is None) != (self.vq_model is None):
            raise ConfigError("pass both unet and vq_model modules, or neither")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"output {self.out_dir} exists and is not a folder; pick another -o")
        unknown = [g for g in self.int8_graphs if g not in SUBMODELS]
        if unknown or (self.int8 and not self.int8_graphs):
            raise ConfigError(f"--int8-graphs must name some of {', '.join(SUBMODELS)}; got {list(self.int8_graphs)}")
        if self.calib_count < 1 or self.accuracy_count < 1:
            raise ConfigError("calibration and accuracy image counts must be >= 1")


@dataclass
class ExportResult:
    out_dir: Path
    manifest_path: Path
    files: Dict[str, Dict[str, Path]]  # graph -> precision -> path
    parity: List[ParityResult]
    accuracy: ParityReport
    lint: Dict[str, str]
    export_seconds: Dict[str, float]
    bytes: Dict[str, Dict[str, int]]
    kind: str

    def failed_precisions(self) -> List[str]:
        return self.accuracy.failed_precisions()


def _resolve_models(config: ExportConfig) -> Tuple[Any, Any, str, bool]:
    """(unet, vq, kind, demo)."""
    if config.unet is not None:
        unet: Any = config.unet
        noise = int(unet.config.noise_channels)
        kind = config.model or ("rsd" if noise else None)
        if kind is None:
            raise ConfigError("pass model= (sinsr, resshift-v1 or resshift-v3) for a UNet without noise channels")
        return unet, config.vq_model, kind, bool(config.demo)
    from rsd_deploy.pipeline.loading import ModelSource, load_torch_models

    source = ModelSource(checkpoint=config.checkpoint, vq=config.vq,
                         model=ModelKind(config.model) if config.model else None)
    source.validate()
    unet, vq, kind, _label = load_torch_models(source)
    demo = config.demo if config.demo is not None else config.checkpoint is None
    return unet, vq, kind.value, demo


def _profile(config: ExportConfig, multiple: int) -> ShapeProfile:
    base = default_profile(multiple)
    prof = ShapeProfile(min=tuple(config.min_shape or base.min),  # type: ignore[arg-type]
                        opt=tuple(config.opt_shape or base.opt),  # type: ignore[arg-type]
                        max=tuple(config.max_shape or base.max))  # type: ignore[arg-type]
    for label, s in (("min", prof.min), ("opt", prof.opt), ("max", prof.max)):
        if len(s) != 3 or min(s) < 1:
            raise ShapeError(f"--{label}-shape {s} must be BxHxW with positive sizes (latent px)")
        if s[1] % multiple or s[2] % multiple:
            raise ShapeError(f"--{label}-shape {'x'.join(map(str, s))}: H and W must be multiples of {multiple} "
                             f"latent px for this model")
    if not all(prof.min[i] <= prof.opt[i] <= prof.max[i] for i in range(3)):
        raise ShapeError(f"shape profile must satisfy min <= opt <= max per axis; got {prof.min}, {prof.opt}, {prof.max}")
    return prof


def _verify_shapes(config: ExportConfig, export_shape: Shape3, multiple: int) -> List[Shape3]:
    """The export shape plus a non-square shape and a batch-2 shape of the other orientation (the
    ONNX graphs are fully dynamic; engine profiles only matter later, for TensorRT)."""
    if config.verify_shapes:
        return [tuple(s) for s in config.verify_shapes]  # type: ignore[misc]
    shapes = [tuple(export_shape), (1, multiple, 2 * multiple), (2, 2 * multiple, multiple)]
    return list(dict.fromkeys(shapes))  # type: ignore[arg-type]


def decoder_parity_feeds(vq: Any) -> Callable[[int, int, int, int], Dict[str, np.ndarray]]:
    """Decoder inputs away from code ties: codebook entries plus a perturbation of 20 % of the
    smallest code distance, so fp32 reduction-order differences cannot flip an argmin."""
    codes = vq.quantize.embedding.weight.detach().double().numpy()
    d = np.sqrt(((codes[:, None, :] - codes[None, :, :]) ** 2).sum(-1))
    d[np.diag_indices_from(d)] = np.inf
    radius = 0.2 * float(d[np.isfinite(d) & (d > 0)].min()) if np.any(np.isfinite(d) & (d > 0)) else 0.0

    def feeds(b: int, h: int, w: int, seed: int) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, codes.shape[0], size=(b, h, w))
        z = codes[idx]
        direction = rng.standard_normal(z.shape)
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True) + 1e-12
        z = z + radius * rng.uniform(0, 1, size=(b, h, w, 1)) * direction
        return decoder_spec(1).feeds({Role.X0: np.ascontiguousarray(z.transpose(0, 3, 1, 2)).astype(np.float32)})

    return feeds


def _staged_files(graph: ExportedGraph) -> List[str]:
    return [graph.path.name] + list(graph.external_data)


@sigterm_as_exception()  # SIGTERM (timeout, docker stop) removes the staging folder as Ctrl-C does
def export_models(config: ExportConfig) -> ExportResult:
    """Export, convert, verify and describe the three graphs; see the module docstring."""
    from tqdm import tqdm

    from rsd_deploy.export import calib
    from rsd_deploy.export.fp16 import convert_to_fp16
    from rsd_deploy.export.int8 import quantize_int8
    from rsd_deploy.export.validate import accuracy_report, check_fp32_parity, lint
    from rsd_deploy.models import Schedule

    config.validate()
    unet, vq, kind, demo = _resolve_models(config)
    unet.eval()
    vq.eval()
    schedule = Schedule.preset(ModelKind(kind).schedule_preset)
    if kind.startswith("resshift"):
        logger.warning("%s is a %d-step teacher: the denoiser graph runs only its last step (t=%d), so "
                       "`rsd-upscale --onnx` cannot sample with it; export an RSD or SinSR student for deployment",
                       kind, schedule.T, schedule.T - 1)
    constants = DiffusionConstants.from_schedule(schedule)
    multiple = int(unet.config.input_multiple)
    noise_channels = int(unet.config.noise_channels)
    profile = _profile(config, multiple)
    specs = build_specs(unet.config, profile)
    modules = graph_modules(unet, vq, constants)
    export_shape: Shape3 = tuple(config.export_shape or profile.opt)  # type: ignore[assignment]
    shapes = _verify_shapes(config, export_shape, multiple)
    precisions = ["fp32"] + (["fp16"] if config.fp16 else []) + (["int8"] if config.int8 else [])

    # real images first: a missing calibration folder fails before minutes of export work
    folders = [Path(p) for p in config.calib_dirs] or calib.default_calibration_dirs()
    lr_size = export_shape[1]
    # --calib DIR: calibration and accuracy crops both from there (the user's images); default: calibration
    # from the training photos (hr_photos, downscaled), accuracy from the test sets (evaluation only)
    n_cal = config.calib_count if config.int8 and config.calib_dirs else 0
    hr_calib: List[np.ndarray] = []
    calib_info: Dict[str, Any] = {"folders": [str(f) for f in folders], "lr_crop": lr_size, "source": "LR crops"}
    if config.int8 and not config.calib_dirs:
        hr_dir = calib.default_hr_calibration_dir()
        if hr_dir is None:
            raise ConfigError("INT8 calibration needs real images: shared/data/hr_photos was not found; pass --calib "
                              "DIR with LR images")
        hr_calib = calib.hr_lr_crops(hr_dir, lr_size, config.calib_count, seed=config.seed)
        calib_info = {"folders": [str(hr_dir)], "lr_crop": lr_size,
                      "source": "x4 area-downscaled HR crops of the training photos (never the test sets)"}
    if folders:
        crops = calib.lr_crops(folders, lr_size, n_cal + config.accuracy_count, seed=config.seed)
        image_names = [f"real crop {i} ({', '.join(f.name for f in folders)})" for i in range(len(crops))][n_cal:]
    elif config.int8 and config.calib_dirs:
        raise ConfigError("INT8 calibration needs real images: shared/data was not found; pass --calib DIR with LR images")
    else:
        logger.warning("no real images (shared/data not found, no --calib): the accuracy report uses synthetic "
                       "smooth images; pass --calib DIR for a real-image report")
        crops = calib.synthetic_crops(lr_size, config.accuracy_count, seed=config.seed)
        image_names = [f"synthetic {i}" for i in range(len(crops))]
    if len(crops) <= n_cal:
        raise ConfigError(f"need at least {n_cal + 1} images of >= {lr_size} px in {', '.join(map(str, folders))}")
    accuracy_crops, calib_crops = crops[n_cal:], (crops[:n_cal] if n_cal else hr_calib)

    out_dir = Path(config.out_dir)
    created_out_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = len(SUBMODELS) * len(precisions) + 2
    bar = tqdm(total=steps, desc="rsd-export", unit="step", disable=not config.progress)
    staging = Path(tempfile.mkdtemp(prefix=".rsd-export-", dir=out_dir))  # right before `try`: SIGTERM cleans it
    try:
        torch.manual_seed(config.seed)
        graphs: Dict[str, ExportedGraph] = {}
        files: Dict[str, Dict[str, Tuple[str, List[str], dict]]] = {g: {} for g in SUBMODELS}
        parity: List[ParityResult] = []
        seconds: Dict[str, float] = {}
        for name in SUBMODELS:
            bar.set_postfix_str(f"{name} fp32")
            exported = export_graph(modules[name], specs[name], staging / f"{name}.onnx", export_shape=export_shape,
                                    opset=config.opset, exporter=config.exporter, external_data=config.external_data)
            graphs[name] = exported
            seconds[f"{name}.fp32"] = exported.export_seconds
            feeds_fn = decoder_parity_feeds(vq) if name == "decoder" else None
            parity += check_fp32_parity(exported.path, modules[name], specs[name], shapes, feeds_fn=feeds_fn)
            files[name]["fp32"] = (exported.path.name, list(exported.external_data),
                                   {"tool": f"torch.onnx.export ({exported.exporter}, torch {torch.__version__})",
                                    "kept_fp32": ["*"], "export_shape": list(export_shape),
                                    "export_seconds": round(exported.export_seconds, 2)})
            bar.update()

        if config.fp16:
            import onnx

            for name in SUBMODELS:
                bar.set_postfix_str(f"{name} fp16")
                start = time.perf_counter()
                model16, recipe = convert_to_fp16(onnx.load(str(graphs[name].path)))
                path = staging / f"{name}.fp16.onnx"
                ext = save_onnx(model16, path, bool(graphs[name].external_data) if config.external_data is None
                                else config.external_data)
                seconds[f"{name}.fp16"] = time.perf_counter() - start
                files[name]["fp16"] = (path.name, ext, recipe.to_dict())
                bar.update()

        accuracy_inputs = draw_inputs(accuracy_crops, noise_channels, seed=config.seed)
        bar.update()
        if config.int8:
            cal = calib.reference_samples(modules, calib_crops, noise_channels, seed=config.seed + 1)
            info = calib_info
            for name in SUBMODELS:
                if name not in config.int8_graphs:
                    fp32_file, fp32_ext, _ = files[name]["fp32"]
                    files[name]["int8"] = (fp32_file, fp32_ext, {
                        "tool": "none (the int8 variant of this graph is its fp32 graph)", "kept_fp32": ["*"],
                        "reason": KEPT_FP32_REASON[name]})
                    bar.update()
                    continue
                bar.set_postfix_str(f"{name} int8")
                start = time.perf_counter()
                path = staging / f"{name}.int8.onnx"
                external = bool(graphs[name].external_data) if config.external_data is None else config.external_data
                recipe8 = quantize_int8(graphs[name].path, path, [s.feeds(name) for s in cal], info, external)
                seconds[f"{name}.int8"] = time.perf_counter() - start
                files[name]["int8"] = (path.name, [path.name + ".data"] if external else [], recipe8.to_dict())
                bar.update()

        graph_paths = {g: {p: staging / f for p, (f, _, _) in v.items()} for g, v in files.items()}
        bar.set_postfix_str("accuracy")
        codebook = vq.quantize.embedding.weight.detach().double().numpy()
        report = accuracy_report(graph_paths, modules, specs, accuracy_inputs, schedule, image_names, codebook=codebook)
        lint_results: Dict[str, str] = {}
        linted: Dict[Path, str] = {}
        for g, variants in graph_paths.items():
            for p, path in variants.items():
                if path not in linted:  # int8 variants may reuse the fp32 file
                    ok, message = lint(path, specs[g].input_shapes(*export_shape))
                    if not ok:
                        raise ExportError(f"{path.name} fails lint: {message}")
                    linted[path] = message
                lint_results[f"{g}.{p}"] = linted[path]
        bar.update()

        # move into place (graphs first, manifest last), then describe what is on disk
        moved = set()
        for g, staged in files.items():
            for p, (f, ext, _) in staged.items():
                for name in [f] + ext:
                    if name not in moved:
                        shutil.move(str(staging / name), str(out_dir / name))  # same fs: os.replace
                        moved.add(name)
        manifest_graphs = {}
        sizes: Dict[str, Dict[str, int]] = {}
        for g in SUBMODELS:
            entries = {p: mf.variant_entry(out_dir, f, ext, config.opset, recipe) for p, (f, ext, recipe)
                       in files[g].items()}
            sizes[g] = {p: v["bytes"] for p, v in entries.items()}
            manifest_graphs[g] = {"spec": specs[g].to_dict(), "variants": entries}
        tile = int(profile.opt[1])
        manifest = mf.build_manifest(kind=kind, demo=demo, noise_channels=noise_channels,
                                     unet_checkpoint=config.checkpoint, vq_checkpoint=config.vq,
                                     constants=constants, latent_multiple=multiple, graphs=manifest_graphs,
                                     tile=tile, overlap=max(tile // 4, 1))
        accuracy = report.to_dict()
        accuracy["fp32_parity"] = [{"graph": r.graph, "shape": list(r.shape), "max_abs": r.max_abs,
                                    "mean_abs": r.mean_abs, "atol": r.atol} for r in parity]
        accuracy["lint"] = lint_results
        atomic_write_json(out_dir / mf.ACCURACY_JSON, accuracy)
        atomic_write_text(out_dir / mf.ACCURACY_MD, report.to_markdown())
        mf.write_manifest(out_dir, manifest)
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        if created_out_dir and not any(out_dir.iterdir()):  # a failed export leaves no empty folder behind
            out_dir.rmdir()
    final = {g: {p: out_dir / f for p, (f, _, _) in v.items()} for g, v in files.items()}
    for line in report.summary_lines():
        logger.info("accuracy %s", line)
    return ExportResult(out_dir=out_dir, manifest_path=out_dir / mf.MANIFEST_NAME, files=final, parity=parity,
                        accuracy=report, lint=lint_results, export_seconds=seconds, bytes=sizes, kind=kind)
