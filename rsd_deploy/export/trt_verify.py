"""``rsd-export --verify DIR``: ONNX Runtime fp32 graphs vs TensorRT engines on real images.

Polygraphy is the harness: per graph, :class:`polygraphy.comparator.Comparator` runs the fp32 ONNX
(ONNX Runtime, CPU) and the engine (``TrtRunner``) on the same real inputs and checks the mean
absolute error (NVIDIA's fp16 parity recipe: ``check_error_stat="mean"``). End to end, the engines
are chained encoder -> denoiser -> decoder on each LR crop and the SR image (clamped, rounded to
uint8 as the pipeline writes it) is compared with the fp32 ONNX chain: PSNR in dB.

Inputs are what each graph sees in the pipeline: the bicubic-x4 LR crop for the encoder, the fp32
encoder's z_y as the prior sample z_t = z_y + prior_std * eps (seeded eps, and the RSD noise map) for the denoiser, the fp32
denoiser's x0 for the decoder.

Thresholds (end-to-end PSNR vs fp32 ONNX Runtime, uint8 images): fp32 >= 45 dB (TF32 off: only
kernel reduction order and rare VQ code flips differ), fp16 >= 40 dB and int8 >= 30 dB (the
export issue's bounds against PyTorch fp32). Per-graph mean |error|: 1e-3 / 1e-2 / 5e-2.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from rsd_deploy.bundle.specs import SUBMODELS
from rsd_deploy.errors import AtolError, ConfigError

log = logging.getLogger(__name__)

REPORT_NAME = "trt_verify.json"
MIN_PSNR_DB = {"fp32": 45.0, "fp16": 40.0, "int8": 30.0}
MEAN_ATOL = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}
RTOL = 1e-2  # polygraphy passes an element within atol OR rtol; mean error is what is checked

#: (submodel, precision) -> a polygraphy runner for the candidate (default: the TensorRT engine)
RunnerFactory = Callable[[str, str], Any]


@dataclass(frozen=True)
class VerifyOptions:
    """What ``rsd-export --verify`` compares."""

    precisions: Optional[Tuple[str, ...]] = None  # None: every precision the bundle has engines for
    image_dirs: Tuple[Path, ...] = ()  # LR images; empty: shared/data (imagenet_val_sr/lq, realset65)
    count: int = 4  # LR crops
    latent_size: Optional[int] = None  # crop side in LR (= latent) px; default: the spec's opt tile
    seed: int = 0
    min_psnr_db: Mapping[str, float] = field(default_factory=lambda: dict(MIN_PSNR_DB))
    mean_atol: Mapping[str, float] = field(default_factory=lambda: dict(MEAN_ATOL))
    write_report: bool = True

    def validate(self) -> None:
        if self.precisions is not None:
            unknown = [p for p in self.precisions if p not in MIN_PSNR_DB]
            if unknown or not self.precisions:
                raise ConfigError(f"unknown precision(s) {unknown or list(self.precisions)}; "
                                  "choose fp32, fp16 or int8")
        if self.count < 1:
            raise ConfigError(f"--verify needs at least one image, got count={self.count}")


@dataclass(frozen=True)
class GraphComparison:
    """One graph at one precision: candidate vs fp32 ONNX Runtime over all crops."""

    submodel: str
    precision: str
    max_abs: float
    mean_abs: float
    psnr_db: float
    polygraphy_passed: bool


@dataclass(frozen=True)
class EndToEnd:
    """The SR image (uint8) of the candidate chain vs the fp32 ONNX Runtime chain."""

    precision: str
    psnr_db: float  # over all crops together
    min_psnr_db: float  # worst crop
    threshold_db: float

    @property
    def passed(self) -> bool:
        return self.psnr_db >= self.threshold_db


@dataclass
class VerifyReport:
    graphs: List[GraphComparison]
    end_to_end: List[EndToEnd]
    images: List[str]
    latent_size: int

    @property
    def passed(self) -> bool:
        return all(g.polygraphy_passed for g in self.graphs) and all(e.passed for e in self.end_to_end)

    def failures(self) -> List[str]:
        out = [f"{g.submodel}.{g.precision} mean |err| {g.mean_abs:.3g}" for g in self.graphs if not g.polygraphy_passed]
        out += [f"{e.precision} end-to-end {e.psnr_db:.1f} dB < {e.threshold_db:.0f} dB"
                for e in self.end_to_end if not e.passed]
        return out

    def summary_lines(self) -> List[str]:
        lines = [f"{g.submodel:>8} {g.precision}: max |err| {g.max_abs:.3g}, mean |err| {g.mean_abs:.3g}, "
                 f"PSNR {_fmt_db(g.psnr_db)} ({'ok' if g.polygraphy_passed else 'FAIL'})" for g in self.graphs]
        lines += [f"end-to-end {e.precision}: PSNR {_fmt_db(e.psnr_db)} (worst crop {_fmt_db(e.min_psnr_db)}, "
                  f"need >= {e.threshold_db:.0f} dB) {'ok' if e.passed else 'FAIL'}" for e in self.end_to_end]
        return lines

    def __str__(self) -> str:
        return "\n".join(["TensorRT vs ONNX Runtime fp32:"] + [f"  {line}" for line in self.summary_lines()])

    def to_dict(self) -> Dict[str, Any]:
        def clean(value: Any) -> Any:  # JSON has no inf: a perfect match is reported as null
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {
            "reference": "ONNX Runtime fp32 (CPU), same inputs",
            "images": self.images, "latent_size": self.latent_size, "passed": self.passed,
            "graphs": [{k: clean(v) for k, v in asdict(g).items()} for g in self.graphs],
            "end_to_end": [{**{k: clean(v) for k, v in asdict(e).items()}, "passed": e.passed}
                           for e in self.end_to_end],
        }


def _fmt_db(value: float) -> str:
    return "inf dB (identical)" if math.isinf(value) else f"{value:.1f} dB"


def psnr_db(reference: np.ndarray, candidate: np.ndarray, peak: float) -> float:
    """10 log10(peak^2 / MSE); inf when identical."""
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """The pipeline's postprocess: clamp to [-1, 1], round((x + 1) * 127.5)."""
    return np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _engine_runner_factory(onnx_dir: Path, manifest: Mapping[str, Any]) -> RunnerFactory:
    """TrtRunner over each checked engine of the bundle (stale/foreign engines refused first)."""
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from rsd_deploy.backends import trt_env
    from rsd_deploy.backends.trt_plans import PlanRuntime, check_engine, rebuild_command
    from rsd_deploy.backends.trt_runtime import make_runtime
    from rsd_deploy.errors import BackendUnavailableError

    available, reason = trt_env.tensorrt_status()
    if not available:
        raise BackendUnavailableError(f"cannot verify TensorRT engines: {reason}")
    version, gpu = trt_env.tensorrt_version(), trt_env.current_gpu()
    runtimes: List[Any] = []  # TensorRT runtimes must outlive their engines

    def factory(submodel: str, precision: str) -> Any:
        entry = (manifest.get("engines") or {}).get(submodel, {}).get(precision)
        if entry is None:
            raise BackendUnavailableError(f"{onnx_dir} has no {precision} engine for the {submodel}; "
                                          f"build it with `{rebuild_command(onnx_dir)}`")
        plan_path = onnx_dir / entry["file"]
        variant = manifest["graphs"][submodel]["variants"].get(precision, {})
        sidecar = check_engine(plan_path, tensorrt_version=version, gpu=gpu, onnx_sha256=variant.get("sha256"))
        keep, runtime = make_runtime(PlanRuntime.from_sidecar(sidecar))  # lean runtime / host code as needed
        runtimes.extend(keep)
        return TrtRunner(EngineFromBytes(plan_path.read_bytes(), runtime=runtime), name=f"trt-{submodel}-{precision}")

    return factory


def _engine_precisions(manifest: Mapping[str, Any], onnx_dir: Path) -> Tuple[str, ...]:
    """Precisions with an engine for every submodel."""
    from rsd_deploy.backends.trt_plans import rebuild_command

    engines = manifest.get("engines") or {}
    found = [p for p in MIN_PSNR_DB if all(p in engines.get(s, {}) for s in SUBMODELS)]
    if not found:
        raise ConfigError(f"{onnx_dir} has no TensorRT engines to verify; build them with "
                          f"`{rebuild_command(onnx_dir)}`")
    return tuple(found)


def _reference_runner(path: Path, name: str) -> Any:
    """An OnnxrtRunner over an unoptimised CPU session of ``path``.

    The session is made here, not with polygraphy's ``SessionFromOnnx``: its
    ``graph_optimization_level`` argument only exists in newer polygraphy (0.49.x, which setup.cfg
    allows, has ``SessionFromOnnx(model_bytes, providers=None)``), while ``OnnxrtRunner`` takes a
    ready session, or a callable returning one, on every version.
    """
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner

    def session() -> Any:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    return OnnxrtRunner(session, name=name)


def _infer(runner: Any, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    (value,) = runner.infer(dict(feeds)).values()
    return np.array(value, copy=True)  # TrtRunner reuses its output buffers


def verify_engines(onnx_dir: Path, options: VerifyOptions = VerifyOptions(),
                   candidate_runner: Optional[RunnerFactory] = None) -> VerifyReport:
    """Compare engines (or ``candidate_runner``'s runners) with the fp32 ONNX graphs on real crops.

    Writes ``trt_verify.json`` beside the graphs (atomically) and raises AtolError (one line, what
    failed) when a precision misses its threshold; the report is still written first.
    """
    from polygraphy.logger import G_LOGGER

    # polygraphy prints its comparisons to stdout; the library reports through logging instead
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        return _verify(Path(onnx_dir), options, candidate_runner)


def _verify(onnx_dir: Path, options: VerifyOptions, candidate_runner: Optional[RunnerFactory]) -> VerifyReport:
    from polygraphy.comparator import Comparator, CompareFunc

    from rsd_deploy.bundle.manifest import Bundle
    from rsd_deploy.bundle.specs import Role
    from rsd_deploy.export import calib
    from rsd_deploy.fileio import atomic_write_json

    options.validate()
    bundle = Bundle.open(onnx_dir)
    factory = candidate_runner or _engine_runner_factory(onnx_dir, bundle.manifest)
    precisions = options.precisions or _engine_precisions(bundle.manifest, onnx_dir)
    spec = bundle.spec("denoiser")
    size = int(options.latent_size or spec.profile.opt[1])
    spec.check_latent_size(size, size)
    folders = list(options.image_dirs) or calib.default_calibration_dirs()
    if not folders:
        raise ConfigError("no real images for --verify: shared/data not found; pass an image folder")
    crops = calib.lr_crops(folders, size, options.count, seed=options.seed)
    noise_channels = bundle.noise_channels
    specs = bundle.specs()
    prior_std = np.float32(bundle.manifest["diffusion"]["prior_std"])
    rng = np.random.default_rng(options.seed)
    eps: List[np.ndarray] = []

    # fp32 ONNX Runtime chain: the reference outputs and every graph's real inputs
    references = {s: _reference_runner(bundle.graph_file(s, "fp32"), f"onnxrt-fp32-{s}") for s in SUBMODELS}
    feeds: Dict[str, List[Dict[str, np.ndarray]]] = {s: [] for s in SUBMODELS}
    reference_sr: List[np.ndarray] = []
    for runner in references.values():
        runner.activate()
    try:
        for crop in crops:
            image = calib.bicubic_x4(torch.from_numpy(crop)).numpy()
            feeds["encoder"].append(specs["encoder"].feeds({Role.LR_UPSAMPLED: image}))
            z_y = _infer(references["encoder"], feeds["encoder"][-1])
            eps.append(rng.standard_normal(z_y.shape).astype(np.float32))
            student = (rng.standard_normal((1, noise_channels) + z_y.shape[2:]).astype(np.float32)
                       if noise_channels else None)
            den = specs["denoiser"].feeds({Role.Z_T: (z_y + prior_std * eps[-1]).astype(np.float32), Role.LQ: crop,
                                           Role.STUDENT_NOISE: student})
            feeds["denoiser"].append(den)
            x0 = _infer(references["denoiser"], den)
            feeds["decoder"].append(specs["decoder"].feeds({Role.X0: x0}))
            reference_sr.append(_infer(references["decoder"], feeds["decoder"][-1]))
    finally:
        for runner in references.values():
            runner.deactivate()

    graphs: List[GraphComparison] = []
    end_to_end: List[EndToEnd] = []
    for precision in precisions:
        candidates = {s: factory(s, precision) for s in SUBMODELS}
        for submodel in SUBMODELS:
            ref, cand = references[submodel], candidates[submodel]
            results = Comparator.run([ref, cand], data_loader=feeds[submodel])
            accuracy = Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(
                atol=options.mean_atol[precision], rtol=RTOL, check_error_stat="mean"))
            ref_out = np.stack([np.asarray(next(iter(r.values()))) for r in results[ref.name]])
            cand_out = np.stack([np.asarray(next(iter(r.values()))) for r in results[cand.name]]).astype(np.float32)
            error = np.abs(ref_out.astype(np.float64) - cand_out)
            peak = 2.0 if submodel == "decoder" else float(ref_out.max() - ref_out.min()) or 1.0
            graphs.append(GraphComparison(submodel, precision, float(error.max()), float(error.mean()),
                                          psnr_db(ref_out, cand_out, peak), bool(accuracy)))
        # the engines chained on their own outputs, as the pipeline runs them
        for runner in candidates.values():
            runner.activate()
        try:
            sr_candidate = []
            for i in range(len(crops)):
                z_y = _infer(candidates["encoder"], feeds["encoder"][i]).astype(np.float32)
                z_t = (z_y + prior_std * eps[i]).astype(np.float32)
                x0 = _infer(candidates["denoiser"], {**feeds["denoiser"][i], specs["denoiser"].name_of(Role.Z_T): z_t})
                sr_candidate.append(_infer(candidates["decoder"],
                                           specs["decoder"].feeds({Role.X0: x0.astype(np.float32)})))
        finally:
            for runner in candidates.values():
                runner.deactivate()
        ref_u8 = [to_uint8(x) for x in reference_sr]
        cand_u8 = [to_uint8(x) for x in sr_candidate]
        per_crop = [psnr_db(a, b, 255.0) for a, b in zip(ref_u8, cand_u8)]
        overall = psnr_db(np.stack(ref_u8), np.stack(cand_u8), 255.0)
        end_to_end.append(EndToEnd(precision, overall, min(per_crop), float(options.min_psnr_db[precision])))

    report = VerifyReport(graphs=graphs, end_to_end=end_to_end, images=[f"crop{i}" for i in range(len(crops))],
                          latent_size=size)
    for line in report.summary_lines():
        log.info("verify %s", line)
    if options.write_report:
        atomic_write_json(onnx_dir / REPORT_NAME, report.to_dict())
    if not report.passed:
        raise AtolError(f"TensorRT verification failed: {'; '.join(report.failures())} "
                        f"(details in {onnx_dir / REPORT_NAME}); rebuild or re-export that precision")
    return report
