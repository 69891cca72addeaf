"""rsd-export's proof that the exported ONNX graphs compute what PyTorch computes (ONNX Runtime).

* :func:`check_fp32_parity`: an FP32 graph vs its PyTorch module at several shapes (the export
  shape and others), against the spec's max-abs ``atol_fp32``; raises :class:`AtolError` when outside.
* :func:`accuracy_report`: every graph and precision vs PyTorch fp32 on real images, as the one
  :class:`rsd_deploy.export.parity.ParityReport` (per graph errors, end-to-end 8-bit SR PSNR against
  the per-precision floors of ``specs.TOLERANCES``, VQ code flips).
* :func:`lint`: ``onnx.checker`` (full) and ``polygraphy check lint``.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from rsd_deploy.bundle.specs import SUBMODELS, ExportSpec
from rsd_deploy.errors import AtolError, ExportError
from rsd_deploy.export.parity import (OUTPUT_ROLE, GraphFn, ParityInput, ParityReport, compare_arrays, graph_chain,
                                      parity_report)

logger = logging.getLogger(__name__)


def ort_session(path: Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                intra_op_threads: Optional[int] = None) -> Any:
    """An ONNX Runtime session over ``path`` (optimizer notices silenced: they are not actionable)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def run_graph(path: Path, feeds: Sequence[Dict[str, np.ndarray]], providers: Sequence[str] = ("CPUExecutionProvider",),
              intra_op_threads: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
    """Run an ONNX file on each feed dict through polygraphy's Comparator (OnnxrtRunner harness)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator

    from rsd_deploy.export.onnx_export import _quiet_polygraphy

    runner = OnnxrtRunner(ort_session(path, providers, intra_op_threads), name=path.name)
    with _quiet_polygraphy():
        results = Comparator.run([runner], data_loader=list(feeds), warm_up=0)
    return [{k: np.array(v, copy=True) for k, v in it.items()} for it in results[runner.name]]


@dataclass
class ParityResult:
    graph: str
    shape: Tuple[int, int, int]
    max_abs: float
    mean_abs: float
    atol: float

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.atol


def check_fp32_parity(path: Path, module: torch.nn.Module, spec: ExportSpec, shapes: Sequence[Tuple[int, int, int]],
                      feeds_fn: Optional[Callable[[int, int, int, int], Dict[str, np.ndarray]]] = None,
                      raise_on_fail: bool = True) -> List[ParityResult]:
    """ORT CPU vs PyTorch fp32 for one FP32 graph at each (batch, latent h, latent w).

    ``feeds_fn(batch, h, w, seed)`` makes the inputs (default: the spec's dummy inputs).
    """
    from rsd_deploy.export.onnx_export import torch_inputs

    feeds_list = [(feeds_fn or (lambda b, h, w, s: spec.dummy_inputs(b, h, w, seed=s)))(*shape, i + 1)
                  for i, shape in enumerate(shapes)]
    refs = []
    with torch.inference_mode():
        for feeds in feeds_list:
            refs.append({spec.output_names[0]: module(*torch_inputs(spec, feeds)).numpy()})
    outs = run_graph(path, feeds_list)
    results = []
    name = spec.output_names[0]
    for shape, got, ref in zip(shapes, outs, refs):
        stats = compare_arrays([ref[name]], [got[name]], f"{spec.name} fp32 at latent shape {tuple(shape)}")
        results.append(ParityResult(spec.name, (int(shape[0]), int(shape[1]), int(shape[2])), stats["max_abs"],
                                    stats["mean_abs"], spec.atol_fp32))
        logger.info("%s fp32 parity at %s: max abs %.2e, mean abs %.2e (atol %.0e)", spec.name, shape,
                    stats["max_abs"], stats["mean_abs"], spec.atol_fp32)
    failed = [r for r in results if not r.passed]
    if raise_on_fail and failed:
        worst = max(results, key=lambda r: r.max_abs)
        raise AtolError(f"{spec.name}: ONNX Runtime fp32 differs from PyTorch by {worst.max_abs:.2e} at latent shape "
                        f"{worst.shape} (tolerance {spec.atol_fp32:.0e}); the graph is wrong: report it with the shape")
    return results


def lint(path: Path, input_shapes: Optional[Mapping[str, Sequence[int]]] = None, timeout_s: int = 600) -> Tuple[bool, str]:
    """(ok, message): ``onnx.checker`` (full check, path form for external data) + ``polygraphy check lint``.

    ``input_shapes``: concrete shapes for polygraphy's inference pass (dynamic inputs otherwise
    default to 1x1 images, which a stride-2 conv graph rightly rejects).
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        return False, f"onnx.checker: {exc}"
    exe = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
    if not Path(exe).exists():
        return True, "onnx.checker ok; polygraphy not installed, lint skipped"
    env = dict(os.environ, POLYGRAPHY_AUTOINSTALL_DEPS="0")
    cmd = [exe, "check", "lint", str(path)]
    if input_shapes:
        cmd += ["--input-shapes"] + [f"{k}:[{','.join(map(str, v))}]" for k, v in input_shapes.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env=env)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("[E]")]
        return False, "polygraphy check lint: " + (lines[0] if lines else f"exit {proc.returncode}")
    return True, "onnx.checker ok; polygraphy check lint ok"


def ort_graph_fn(path: Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 intra_op_threads: Optional[int] = None) -> GraphFn:
    """One ONNX Runtime session over ``path`` as a parity GraphFn (feeds -> {output name: array})."""
    session = ort_session(path, providers, intra_op_threads)
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds)))


def torch_graph_fn(module: torch.nn.Module, spec: ExportSpec) -> GraphFn:
    """A PyTorch graph module (onnx_export.graph_modules) as a parity GraphFn, fp32 on the CPU."""
    from rsd_deploy.export.onnx_export import torch_inputs

    def run(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with torch.inference_mode():
            return {spec.name_of(OUTPUT_ROLE[spec.name]): module(*torch_inputs(spec, feeds)).numpy()}

    return run


def accuracy_report(graph_files: Mapping[str, Mapping[str, Path]], modules: Mapping[str, torch.nn.Module],
                    specs: Mapping[str, ExportSpec], inputs: Sequence[ParityInput], schedule: Any,
                    image_names: Sequence[str], providers: Sequence[str] = ("CPUExecutionProvider",),
                    codebook: Optional[np.ndarray] = None) -> ParityReport:
    """``graph_files[graph][precision]`` = ONNX path, against the fp32 PyTorch ``modules`` on ``inputs``.

    Per-graph errors are reported (not held to ``mean_atol``); each precision passes on its end-to-end
    floor. ``codebook`` (K, D): to count VQ code flips of the chained denoiser output.
    """
    precisions = [p for p in ("fp32", "fp16", "bf16", "int8") if any(p in v for v in graph_files.values())]
    candidates = {}
    for precision in precisions:
        missing = [g for g in SUBMODELS if precision not in graph_files.get(g, {})]
        if missing:
            raise ExportError(f"accuracy report: {precision} graphs missing for {', '.join(missing)}")
        candidates[precision] = graph_chain(specs, {g: ort_graph_fn(graph_files[g][precision], providers)
                                                    for g in SUBMODELS})
    reference = graph_chain(specs, {g: torch_graph_fn(modules[g], specs[g]) for g in SUBMODELS})
    report = parity_report(reference, candidates, inputs, schedule, reference_name="PyTorch fp32 (CPU)",
                           candidate_name=f"ONNX Runtime ({', '.join(providers)})", image_names=image_names,
                           codebook=codebook, check_graphs=False)
    for e in report.end_to_end:
        logger.info("%s end-to-end SR PSNR vs PyTorch fp32: worst crop %.2f dB", e.precision, e.min_psnr_db)
    return report
