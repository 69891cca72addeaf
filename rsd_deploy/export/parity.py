"""One parity report: a candidate runtime's three graphs against a reference, per graph and end to end.

rsd-export checks its ONNX Runtime graphs of every precision against PyTorch fp32 with it
(``validate.accuracy_report``), ``rsd-export --verify`` the TensorRT engines against the fp32 ONNX
Runtime graphs (``trt_verify.verify_engines``); any other runtime plugs in the same way::

    report = parity_report(reference, {"bf16": candidate}, inputs, schedule)
    report.raise_for_failures("OpenVINO bf16")  # AtolError (one line) when a tolerance is missed

A :class:`Chain` is one runtime's graphs at one precision as numpy functions by role: ``encode``
(bicubic-x4 LR -> z_y), ``denoise`` (z_t, lq, student noise -> x0), ``decode`` (x0 -> SR image).
:func:`graph_chain` builds one from per-graph callables over named feeds (ONNX Runtime sessions,
polygraphy runners, PyTorch graph modules), binding by tensor role through the specs.

Per graph, the candidate gets the reference's inputs of that graph (isolated error): max and mean
|error|, PSNR over the reference's value range. End to end, the candidate chain runs on its own outputs
(z_t = ``Schedule.prior(z_y, prior noise)`` on the host, as the SR pipeline does) and its SR image,
rounded to 8 bits as rsd-upscale writes it (``rsd_deploy.metrics``), is compared with the reference's.
Tolerances: ``rsd_deploy.bundle.specs.TOLERANCES`` (one row per precision, each with its reason).
Typed errors (as Optimum's exporters): ShapeError (an output of another shape), OutputMatchError
(other output tensors), AtolError (values outside the tolerance).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from rsd_deploy import metrics
from rsd_deploy.errors import AtolError, OutputMatchError, ShapeError
from rsd_deploy.bundle.specs import ExportSpec, Role, tolerance

#: one graph: feeds by graph input name -> its output (an array, or a {name: array} dict)
GraphFn = Callable[[Dict[str, np.ndarray]], Any]
#: a perfect crop (inf dB) counts as this in the mean over crops
PSNR_CAP_DB = 200.0


class Chain(Protocol):
    """The three graphs of one runtime at one precision, batch-1 numpy float32 NCHW."""

    def encode(self, image: np.ndarray) -> np.ndarray: ...

    def denoise(self, z_t: np.ndarray, lq: np.ndarray, student_noise: Optional[np.ndarray]) -> np.ndarray: ...

    def decode(self, x0: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ParityInput:
    """One LR crop and the noise its run consumes."""

    lq: np.ndarray  # (1, 3, h, w) LR in [-1, 1] at latent size
    prior_noise: np.ndarray  # (1, 3, h, w) N(0, I)
    student_noise: Optional[np.ndarray] = None  # (1, noise_channels, h, w) for RSD students


def draw_inputs(crops: Sequence[np.ndarray], noise_channels: int, seed: int = 0) -> List[ParityInput]:
    """Parity inputs for LR crops (1, 3, h, w): per crop the prior noise, then the student noise map,
    from one CPU ``torch.Generator`` (the draw order of ``calib.reference_samples``)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for lq in crops:
        shape = tuple(np.shape(lq))
        prior = torch.randn(shape, generator=gen).numpy()
        student = torch.randn((shape[0], noise_channels, *shape[2:]), generator=gen).numpy() if noise_channels else None
        out.append(ParityInput(np.ascontiguousarray(lq, np.float32), prior, student))
    return out


#: the output role of each graph
OUTPUT_ROLE = {"encoder": Role.LATENT, "denoiser": Role.X0, "decoder": Role.SR_IMAGE}


def _single_output(out: Any, spec: ExportSpec) -> np.ndarray:
    if isinstance(out, Mapping):
        if sorted(out) != sorted(spec.output_names):
            raise OutputMatchError(f"{spec.name}: the candidate returns outputs {list(out)}, the spec says "
                                   f"{list(spec.output_names)}; the graph or engine is not this model's: re-export it")
        out = out[spec.name_of(OUTPUT_ROLE[spec.name])]
    return np.asarray(out, dtype=np.float32)


@dataclass
class GraphChain:
    """A :class:`Chain` over one callable per graph (``fns[graph](feeds) -> output``)."""

    specs: Mapping[str, ExportSpec]
    fns: Mapping[str, GraphFn]

    def _run(self, graph: str, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        return _single_output(self.fns[graph](feeds), self.specs[graph])

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self._run("encoder", self.specs["encoder"].feeds({Role.LR_UPSAMPLED: image}))

    def denoise(self, z_t: np.ndarray, lq: np.ndarray, student_noise: Optional[np.ndarray]) -> np.ndarray:
        return self._run("denoiser", self.specs["denoiser"].feeds(
            {Role.Z_T: z_t, Role.LQ: lq, Role.STUDENT_NOISE: student_noise}))

    def decode(self, x0: np.ndarray) -> np.ndarray:
        return self._run("decoder", self.specs["decoder"].feeds({Role.X0: x0}))


def graph_chain(specs: Mapping[str, ExportSpec], fns: Mapping[str, GraphFn]) -> GraphChain:
    return GraphChain(specs, fns)


@dataclass
class BackendChain:
    """A :class:`Chain` over a runtime ``Backend`` (rsd_deploy/backends): what the SR pipeline runs,
    at the one-step model's step T-1."""

    backend: Any
    step: int

    @staticmethod
    def _np(x: Any) -> np.ndarray:
        return x.float().cpu().numpy()

    def encode(self, image: np.ndarray) -> np.ndarray:
        import torch

        return self._np(self.backend.encode(torch.from_numpy(image)))

    def denoise(self, z_t: np.ndarray, lq: np.ndarray, student_noise: Optional[np.ndarray]) -> np.ndarray:
        import torch

        noise = None if student_noise is None else torch.from_numpy(student_noise)
        return self._np(self.backend.denoise(torch.from_numpy(z_t), self.step, torch.from_numpy(lq), noise))

    def decode(self, x0: np.ndarray) -> np.ndarray:
        import torch

        return self._np(self.backend.decode(torch.from_numpy(x0)))


# ------------------------------------------------------------------ the report
@dataclass(frozen=True)
class GraphParity:
    """One graph at one precision: candidate vs reference over all crops, on the reference's inputs."""

    graph: str
    precision: str
    max_abs: float
    mean_abs: float
    psnr_db: float  # over the reference output's value range (2 for SR images)
    mean_atol: float
    checked: bool  # False: reported only (the end-to-end floor decides)

    @property
    def passed(self) -> bool:
        return not self.checked or self.mean_abs <= self.mean_atol


@dataclass(frozen=True)
class EndToEnd:
    """The candidate chain's 8-bit SR image vs the reference chain's, per crop."""

    precision: str
    psnr_db: float  # all crops together
    min_psnr_db: float  # the worst crop: what the threshold applies to
    mean_psnr_db: float  # mean over crops (inf counted as PSNR_CAP_DB)
    threshold_db: float
    code_flips: Optional[float] = None  # share of latent positions whose VQ code differs

    @property
    def passed(self) -> bool:
        return self.min_psnr_db >= self.threshold_db


def _finite(value: Any) -> Any:  # JSON has no inf: a perfect match is written as null
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _db(value: float) -> str:
    return "inf dB (identical)" if math.isinf(value) else f"{value:.2f} dB"


@dataclass
class ParityReport:
    reference: str
    candidate: str
    images: List[str]
    latent_shape: Tuple[int, int, int]
    graphs: List[GraphParity] = field(default_factory=list)
    end_to_end: List[EndToEnd] = field(default_factory=list)

    @property
    def precisions(self) -> List[str]:
        return [e.precision for e in self.end_to_end]

    def extend(self, other: "ParityReport") -> "ParityReport":
        """Add another report's rows (same reference and inputs, other precisions)."""
        self.graphs += other.graphs
        self.end_to_end += other.end_to_end
        return self

    def end_to_end_of(self, precision: str) -> EndToEnd:
        return next(e for e in self.end_to_end if e.precision == precision)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.graphs) and all(e.passed for e in self.end_to_end)

    def failed_precisions(self) -> List[str]:
        return [p for p in self.precisions if not self.end_to_end_of(p).passed
                or not all(g.passed for g in self.graphs if g.precision == p)]

    def failures(self) -> List[str]:
        out = [f"{g.graph}.{g.precision} mean |err| {g.mean_abs:.3g} > {g.mean_atol:g}" for g in self.graphs
               if not g.passed]
        out += [f"{e.precision} end-to-end {e.min_psnr_db:.1f} dB < {e.threshold_db:g} dB" for e in self.end_to_end
                if not e.passed]
        return out

    def raise_for_failures(self, what: str, hint: str = "rebuild or re-export that precision") -> None:
        """AtolError (one line: what failed and what to do) unless every tolerance holds."""
        if not self.passed:
            raise AtolError(f"{what}: {'; '.join(self.failures())}; {hint}")

    def summary_lines(self) -> List[str]:
        out = []
        for e in self.end_to_end:
            flips = "" if e.code_flips is None else f", VQ code flips {100 * e.code_flips:.2f} %"
            errs = ", ".join(f"{g.graph} max {g.max_abs:.2g}/mean {g.mean_abs:.2g}"
                             + ("" if g.passed else " FAIL") for g in self.graphs if g.precision == e.precision)
            out.append(f"{e.precision}: SR PSNR {_db(e.min_psnr_db)} (worst crop; threshold {e.threshold_db:g}: "
                       f"{'pass' if e.passed else 'FAIL'}{flips}); {errs}")
        return out

    def __str__(self) -> str:
        return "\n".join([f"{self.candidate} vs {self.reference}:"] + [f"  {line}" for line in self.summary_lines()])

    def to_dict(self) -> dict:
        return {
            "reference": self.reference, "candidate": self.candidate, "images": self.images,
            "latent_shape": list(self.latent_shape), "passed": self.passed,
            "tolerances": {p: asdict(tolerance(p)) for p in self.precisions},
            "graphs": {f"{g.graph}.{g.precision}": {**{k: _finite(v) for k, v in asdict(g).items()},
                                                     "passed": g.passed} for g in self.graphs},
            "end_to_end": {e.precision: {"psnr_db": _finite(e.psnr_db), "psnr_db_min": _finite(e.min_psnr_db),
                                         "psnr_db_mean": e.mean_psnr_db, "threshold_db": e.threshold_db,
                                         "passed": e.passed, "vq_code_flip_fraction": e.code_flips}
                           for e in self.end_to_end},
            "notes": ["per-graph rows feed each graph the reference's inputs of that graph (isolated error)",
                      "end to end: the candidate's graphs chained on their own outputs; SR images rounded to 8 bits "
                      "as rsd-upscale writes them; PSNR per crop, the threshold applies to the worst crop",
                      "vq_code_flip_fraction: share of latent positions whose codebook entry differs from the "
                      "reference; each flip changes a 4x4 SR patch and dominates the PSNR loss"],
        }

    def to_markdown(self) -> str:
        b, h, w = self.latent_shape
        lines = [f"# Accuracy of {self.candidate} vs {self.reference}", "",
                 f"Images: {len(self.images)} LR crops, latent {h}x{w} (SR {4 * h}x{4 * w}), batch {b}.", "",
                 "| graph | precision | max abs | mean abs | mean atol | result |", "|---|---|---|---|---|---|"]
        for g in self.graphs:
            result = ("pass" if g.passed else "FAIL") if g.checked else "reported"
            lines.append(f"| {g.graph} | {g.precision} | {g.max_abs:.3g} | {g.mean_abs:.3g} | {g.mean_atol:g} | {result} |")
        lines += ["", "| precision | SR PSNR worst crop (dB) | mean (dB) | threshold (dB) | VQ code flips | result |",
                  "|---|---|---|---|---|---|"]
        for e in self.end_to_end:
            flips = "-" if e.code_flips is None else f"{100 * e.code_flips:.2f} %"
            lines.append(f"| {e.precision} | {e.min_psnr_db:.2f} | {e.mean_psnr_db:.2f} | {e.threshold_db:g} | {flips} "
                         f"| {'pass' if e.passed else 'FAIL'} |")
        lines += ["", "Thresholds and their reasons: rsd_deploy/bundle/specs.py TOLERANCES. Per-graph rows feed each "
                  "graph the reference's inputs; SR images are compared as the 8-bit files rsd-upscale writes."]
        lines += [f"- {p}: {tolerance(p).reason}" for p in self.precisions]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ comparing
def compare_arrays(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], what: str) -> Dict[str, float]:
    """max / mean |error| over all crops; ShapeError when a candidate output has another shape."""
    for r, c in zip(reference, candidate):
        if np.shape(r) != np.shape(c):
            raise ShapeError(f"{what}: the candidate output has shape {np.shape(c)}, the reference "
                             f"{np.shape(r)}; the graph or engine does not match this model")
    err = np.concatenate([np.abs(np.asarray(c, np.float64) - np.asarray(r, np.float64)).ravel()
                          for r, c in zip(reference, candidate)])
    return {"max_abs": float(err.max()), "mean_abs": float(err.mean())}


def nearest_codes(latent: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """(B, D, h, w) latent, (K, D) codebook -> (B, h, w) index of the nearest code (float64 distances)."""
    flat = latent.transpose(0, 2, 3, 1).reshape(-1, latent.shape[1]).astype(np.float64)
    dist = (flat ** 2).sum(1, keepdims=True) + (codebook ** 2).sum(1)[None] - 2.0 * flat @ codebook.T
    return dist.argmin(1).reshape(latent.shape[0], latent.shape[2], latent.shape[3])


@dataclass
class ChainRun:
    """One crop through one chain: every graph's input and output."""

    image: np.ndarray
    z_y: np.ndarray
    z_t: np.ndarray
    x0: np.ndarray
    sr: np.ndarray


def _run_chain(chain: Chain, item: ParityInput, schedule: Any, image: np.ndarray) -> ChainRun:
    z_y = chain.encode(image)
    z_t = schedule.prior(z_y, item.prior_noise).astype(np.float32)
    x0 = chain.denoise(z_t, item.lq, item.student_noise)
    return ChainRun(image, z_y, z_t, x0, chain.decode(x0))


def bicubic_images(inputs: Sequence[ParityInput]) -> List[np.ndarray]:
    """The encoder inputs: rsd-upscale's bicubic x4 of each LR crop."""
    import torch

    from rsd_deploy.pipeline.image_io import bicubic_x4

    return [bicubic_x4(torch.from_numpy(np.ascontiguousarray(i.lq))).numpy() for i in inputs]


def reference_runs(reference: Chain, inputs: Sequence[ParityInput], schedule: Any) -> List[ChainRun]:
    """The reference chain on every input (reusable across several :func:`parity_report` calls)."""
    if not inputs:
        raise ShapeError("parity needs at least one input crop")
    return [_run_chain(reference, item, schedule, image) for item, image in zip(inputs, bicubic_images(inputs))]


def parity_report(reference: Optional[Chain], candidates: Mapping[str, Chain], inputs: Sequence[ParityInput],
                  schedule: Any, *, reference_name: str = "reference", candidate_name: str = "candidate",
                  image_names: Optional[Sequence[str]] = None, codebook: Optional[np.ndarray] = None,
                  check_graphs: bool = True, runs: Optional[Sequence[ChainRun]] = None) -> ParityReport:
    """Compare each ``candidates[precision]`` chain with the ``reference`` chain on ``inputs``.

    ``schedule`` forms z_t (``Schedule.prior``); ``codebook`` (K, D) counts VQ code flips of the chained
    x0; ``check_graphs`` False reports per-graph errors without holding them to ``mean_atol`` (the
    end-to-end floor still applies); ``runs``: :func:`reference_runs` already made (``reference`` is
    then not run). Nothing is raised for missed tolerances: see ``raise_for_failures``.
    """
    if runs is None:
        if reference is None:
            raise ValueError("parity_report needs a reference chain or its runs")
        runs = reference_runs(reference, inputs, schedule)
    refs = list(runs)
    images = [r.image for r in refs]
    b, _, h, w = refs[0].z_y.shape
    report = ParityReport(reference=reference_name, candidate=candidate_name,
                          images=list(image_names or [f"crop{i}" for i in range(len(inputs))]),
                          latent_shape=(int(b), int(h), int(w)))
    for precision, cand in candidates.items():
        tol = tolerance(precision)
        isolated = {"encoder": ([r.z_y for r in refs], [cand.encode(r.image) for r in refs]),
                    "denoiser": ([r.x0 for r in refs], [cand.denoise(r.z_t, i.lq, i.student_noise)
                                                        for r, i in zip(refs, inputs)]),
                    "decoder": ([r.sr for r in refs], [cand.decode(r.x0) for r in refs])}
        for graph, (want, got) in isolated.items():
            stats = compare_arrays(want, got, f"{graph}.{precision}")
            ref_all = np.concatenate([np.ravel(x) for x in want])
            peak = 2.0 if graph == "decoder" else float(ref_all.max() - ref_all.min()) or 1.0
            report.graphs.append(GraphParity(graph, precision, stats["max_abs"], stats["mean_abs"],
                                             metrics.psnr(np.stack(want), np.stack(got), data_range=peak),
                                             tol.mean_atol, check_graphs))
        chained = [_run_chain(cand, item, schedule, image) for item, image in zip(inputs, images)]
        compare_arrays([r.sr for r in refs], [c.sr for c in chained], f"end-to-end {precision}")
        ref8 = [metrics.to_uint8(r.sr) for r in refs]
        cand8 = [metrics.to_uint8(c.sr) for c in chained]
        per_crop = [metrics.psnr(a, c) for a, c in zip(ref8, cand8)]
        flips = None
        if codebook is not None:
            flips = float(np.mean([(nearest_codes(c.x0, codebook) != nearest_codes(r.x0, codebook)).mean()
                                   for r, c in zip(refs, chained)]))
        report.end_to_end.append(EndToEnd(
            precision, metrics.psnr(np.stack(ref8), np.stack(cand8)), min(per_crop),
            float(np.mean([min(v, PSNR_CAP_DB) for v in per_crop])), tol.min_psnr_db, flips))
    return report


__all__ = ["Chain", "GraphChain", "graph_chain", "BackendChain", "ParityInput", "draw_inputs", "GraphParity", "EndToEnd",
           "ParityReport", "ChainRun", "reference_runs", "parity_report", "compare_arrays", "nearest_codes", "bicubic_images"]
