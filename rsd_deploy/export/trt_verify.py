"""``rsd-export --verify DIR``: TensorRT engines vs the fp32 ONNX Runtime graphs on real images.

Polygraphy runs the graphs: ``OnnxrtRunner`` (CPU, graph optimisations off) for the fp32 reference and
``TrtRunner`` over each checked engine for the candidate. The comparison is the one parity report
(:mod:`rsd_deploy.export.parity`): per graph on the reference's inputs of that graph (mean |error|
held to the precision's ``mean_atol``), and end to end with the engines chained on their own outputs,
z_t formed on the host, the SR image rounded to 8 bits as rsd-upscale writes it and compared per
crop against the precision's floor. Both tolerances come from ``specs.TOLERANCES`` (fp32 45 dB, fp16
40 dB, int8 30 dB; each row says why). The report is written to ``trt_verify.json`` before any error.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple

import numpy as np

from rsd_deploy.bundle.specs import SUBMODELS, TOLERANCES
from rsd_deploy.errors import ConfigError
from rsd_deploy.export.parity import (GraphFn, ParityReport, draw_inputs, graph_chain, parity_report,
                                      reference_runs)

log = logging.getLogger(__name__)

REPORT_NAME = "trt_verify.json"
VERIFY_PRECISIONS = ("fp32", "fp16", "int8")  # what TensorRT engines are built in

#: (submodel, precision) -> a polygraphy runner for the candidate (default: the TensorRT engine)
RunnerFactory = Callable[[str, str], Any]


@dataclass(frozen=True)
class VerifyOptions:
    """What ``rsd-export --verify`` compares (tolerances: specs.TOLERANCES)."""

    precisions: Optional[Tuple[str, ...]] = None  # None: every precision the bundle has engines for
    image_dirs: Tuple[Path, ...] = ()  # LR images; empty: shared/data (imagenet_val_sr/lq, realset65)
    count: int = 4  # LR crops
    latent_size: Optional[int] = None  # crop side in LR (= latent) px; default: the spec's opt tile
    seed: int = 0
    write_report: bool = True

    def validate(self) -> None:
        if self.precisions is not None:
            unknown = [p for p in self.precisions if p not in VERIFY_PRECISIONS]
            if unknown or not self.precisions:
                raise ConfigError(f"unknown precision(s) {unknown or list(self.precisions)}; "
                                  f"choose {', '.join(VERIFY_PRECISIONS)}")
        if self.count < 1:
            raise ConfigError(f"--verify needs at least one image, got count={self.count}")


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
    found = [p for p in VERIFY_PRECISIONS if all(p in engines.get(s, {}) for s in SUBMODELS)]
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


def _runner_fn(runner: Any) -> GraphFn:
    """A polygraphy runner (activated by the caller) as a parity GraphFn; outputs copied, since
    TrtRunner reuses its output buffers."""
    return lambda feeds: {k: np.array(v, dtype=np.float32, copy=True) for k, v in runner.infer(dict(feeds)).items()}


def verify_engines(onnx_dir: Path, options: VerifyOptions = VerifyOptions(),
                   candidate_runner: Optional[RunnerFactory] = None) -> ParityReport:
    """Compare engines (or ``candidate_runner``'s runners) with the fp32 ONNX graphs on real crops.

    Writes ``trt_verify.json`` beside the graphs (atomically) and raises AtolError (one line, what
    failed) when a precision misses a tolerance; the report is still written first.
    """
    from polygraphy.logger import G_LOGGER

    # polygraphy prints to stdout; the library reports through logging instead
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        return _verify(Path(onnx_dir), options, candidate_runner)


def _verify(onnx_dir: Path, options: VerifyOptions, candidate_runner: Optional[RunnerFactory]) -> ParityReport:
    from rsd_deploy.bundle.manifest import Bundle
    from rsd_deploy.export import calib
    from rsd_deploy.fileio import atomic_write_json
    from rsd_deploy.models import Schedule
    from rsd_deploy.types import ModelKind

    options.validate()
    bundle = Bundle.open(onnx_dir)
    factory = candidate_runner or _engine_runner_factory(onnx_dir, bundle.manifest)
    precisions = options.precisions or _engine_precisions(bundle.manifest, onnx_dir)
    specs = bundle.specs()
    size = int(options.latent_size or specs["denoiser"].profile.opt[1])
    specs["denoiser"].check_latent_size(size, size)
    folders = list(options.image_dirs) or calib.default_calibration_dirs()
    if not folders:
        raise ConfigError("no real images for --verify: shared/data not found; pass an image folder")
    inputs = draw_inputs(calib.lr_crops(folders, size, options.count, seed=options.seed), bundle.noise_channels,
                         seed=options.seed)
    schedule = Schedule.preset(ModelKind(bundle.manifest["model"]["kind"]).schedule_preset)

    def chain(stack: contextlib.ExitStack, runners: Mapping[str, Any]):
        for runner in runners.values():
            stack.enter_context(runner)  # activate now, deactivate when the stack closes
        return graph_chain(specs, {s: _runner_fn(r) for s, r in runners.items()})

    with contextlib.ExitStack() as stack:
        runs = reference_runs(chain(stack, {s: _reference_runner(bundle.graph_file(s, "fp32"), f"onnxrt-fp32-{s}")
                                            for s in SUBMODELS}), inputs, schedule)
    report: Optional[ParityReport] = None
    for precision in precisions:  # one precision's engines on the device at a time
        with contextlib.ExitStack() as stack:
            part = parity_report(None, {precision: chain(stack, {s: factory(s, precision) for s in SUBMODELS})},
                                 inputs, schedule, reference_name="ONNX Runtime fp32", candidate_name="TensorRT",
                                 check_graphs=True, runs=runs)
        report = part if report is None else report.extend(part)
    assert report is not None  # precisions is never empty
    for line in report.summary_lines():
        log.info("verify %s", line)
    if options.write_report:
        atomic_write_json(onnx_dir / REPORT_NAME, report.to_dict())
    report.raise_for_failures("TensorRT verification failed",
                              f"details in {onnx_dir / REPORT_NAME}; rebuild or re-export that precision")
    return report


__all__ = ["VerifyOptions", "verify_engines", "REPORT_NAME", "TOLERANCES"]
