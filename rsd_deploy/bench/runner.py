"""Run the benchmark: every contender on every backend variant, same inputs, same device.

One run = the whole SR computation on tensors already in memory (no image I/O): bicubic x4 of
the LR -> encode -> prior (and RSD noise map) -> T denoiser calls with the posterior update ->
quantise + decode -> clamp. The three networks are reached only through the ``Backend`` interface
(rsd_deploy/backends/base.py), so stage times are separable; everything else is host work.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from rsd_deploy.backends.base import Backend
from rsd_deploy.bench.contenders import (
    CONTENDERS, Contender, BackendVariant, ModelSet, checkpoint_models, parse_backend_variant, parse_contenders,
    random_models, schedule_for, steps_for, unavailable_reason,
)
from rsd_deploy.bench.timer import DeviceTimer, NullRecorder, measure
from rsd_deploy.errors import ConfigError, RSDError, ShapeError
from rsd_deploy.models.sampler import SamplingNoise, sample
from rsd_deploy.pipeline.image_io import bicubic_x4
from rsd_deploy.types import ModelInfo, ModelKind, TileConfig

logger = logging.getLogger(__name__)

Size = Tuple[int, int]  # LR (height, width)


@dataclass
class BenchConfig:
    """Everything a benchmark run depends on; stored verbatim in results.json."""

    contenders: Tuple[str, ...] = tuple(ModelKind.choices())
    backends: Tuple[str, ...] = ("torch-auto",)  # torch at --precision auto (capabilities.auto_precision)
    device: str = "cpu"
    sizes: Tuple[Size, ...] = ((64, 64),)  # LR sizes; SR is 4x
    batch: int = 1
    warmup: int = 1
    repeats: int = 3
    arch: str = "full"  # random-weight architecture when no checkpoints are given: full | tiny
    checkpoints: Dict[str, str] = field(default_factory=dict)  # contender key -> UNet checkpoint
    vq: Optional[str] = None  # VQ autoencoder checkpoint (required with checkpoints)
    onnx_dir: Optional[str] = None  # pre-exported graphs: DIR/<contender>/<precision>/ (else exported on the fly)
    engine_dir: Optional[str] = None  # TensorRT engines: DIR/<contender>/
    tile: Optional[int] = None  # LR tile size: sizes above it run tiled through the SR pipeline
    tile_overlap: int = 16
    quality_lr: Optional[str] = None  # folder of LR images for the quality side
    quality_hr: Optional[str] = None  # matching HR images (same file stems), optional
    quality_limit: int = 8
    seed: int = 0
    threads: Optional[int] = None  # torch intra-op threads on the CPU (None: leave as is)
    official_repo: Optional[str] = None  # a ResShift checkout: time the official sampler too (bench/official.py)
    output: str = "bench-results"

    def validate(self) -> None:
        """Bad settings are usage errors (ConfigError, exit 2)."""
        if not self.contenders:
            raise ConfigError("no contenders selected; use --contender rsd (and others)")
        parse_contenders(self.contenders)
        for b in self.backends:
            parse_backend_variant(b, self.device)
        if not 0 <= self.seed < 2 ** 64:  # torch would wrap it silently
            raise ConfigError(f"seed {self.seed} is out of range; use 0 .. 2^64-1")
        if self.batch < 1 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError("batch and repeats must be >= 1 and warmup >= 0")
        for h, w in self.sizes:
            if h < 1 or w < 1:
                raise ConfigError(f"LR size {h}x{w} is not positive; use e.g. --size 64 or --size 96x128")
        if self.checkpoints and not self.vq:
            raise ConfigError("checkpoints given without --vq; pass the VQ autoencoder checkpoint too")
        if self.arch not in ("full", "tiny"):
            raise ConfigError(f"unknown --arch {self.arch!r}; use full or tiny")
        if self.official_repo:
            from rsd_deploy.bench.official import check_repo

            check_repo(Path(self.official_repo))
        if self.quality_hr and not self.quality_lr:
            raise ConfigError("--quality-hr needs --quality-lr (the LR images to super-resolve)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"] = [list(s) for s in self.sizes]
        return d


# ---------------------------------------------------------------- one SR run over a backend

def draw_noises(contender: Contender, schedule, latent_shape: Sequence[int], generator: torch.Generator,
                device: torch.device) -> SamplingNoise:
    """Draw with ``generator`` (on its own device) and move to ``device``; same order as the samplers."""
    def randn(shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)

    b, _, h, w = latent_shape
    prior = randn(latent_shape)
    if contender.one_step:
        nmap = randn((b, contender.noise_channels, h, w)) if contender.noise_channels else None
        return SamplingNoise(prior, nmap)
    return SamplingNoise(prior, None, tuple(randn(latent_shape) for _ in range(schedule.T)))


def super_resolve(backend: Backend, contender: Contender, schedule, lq: torch.Tensor, noises: SamplingNoise,
                  recorder=None, steps: Optional[Sequence[int]] = None) -> torch.Tensor:
    """LR (B, 3, h, w) in [-1, 1] -> SR (B, 3, 4h, 4w) in [-1, 1] through ``backend``.

    The SR pipeline's computation on one untiled batch: bicubic x4, encode, the one sampler
    (``rsd_deploy.models.sampler.sample``), decode, clamp. ``steps`` overrides the step index passed to
    the backend (timing-only runs of graphs that fold the step in, see ``denoise_step_for``).
    ``recorder`` marks encode/denoise/decode.
    """
    rec = recorder or NullRecorder()
    lq = lq.to(backend.device)
    image = bicubic_x4(lq)
    with rec.stage("encode"):
        z_y = backend.encode(image)
    wanted = list(steps_for(contender, schedule))
    call_step = dict(zip(wanted, steps)) if steps is not None else {}

    def denoise(z_t: torch.Tensor, step: int, lq_: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        with rec.stage("denoise"):
            return backend.denoise(z_t, call_step.get(step, step), lq_, noise)

    z = sample(denoise, schedule, z_y, lq, noises, multistep=not contender.one_step)
    with rec.stage("decode"):
        out = backend.decode(z)
    return out.clamp(-1.0, 1.0)


def denoise_step_for(backend: Backend, contender: Contender, schedule) -> Tuple[Optional[List[int]], bool]:
    """(steps to pass, timing_only). A backend whose denoiser graph folds t = T-1 in cannot run the
    other steps of a multi-step sampler; its cost per call does not depend on t, so for SPEED the
    T-1 graph is called T times (the result is then not a valid image and is not used for quality)."""
    supported = getattr(backend, "supported_steps", None)
    wanted = steps_for(contender, schedule)
    if supported is None or all(s in supported for s in wanted):
        return None, False
    fallback = max(supported)
    return [fallback] * len(wanted), True


# ---------------------------------------------------------------- backends

BackendFactory = Callable[[BackendVariant, Contender, ModelSet, object, BenchConfig, Path], Backend]


def default_backend_factory(variant: BackendVariant, contender: Contender, models: ModelSet, schedule,
                            config: BenchConfig, workdir: Path) -> Backend:
    """Build the backend of ``variant`` for ``contender`` (export ONNX graphs on the fly if needed)."""
    from rsd_deploy.backends.base import create_backend

    unet, vq = models.unets[contender.key], models.vq
    if variant.runtime == "torch":
        return create_backend("torch", unet=unet, vq=vq, schedule=schedule, device=variant.device,
                              precision=variant.precision)
    if variant.runtime in ("torch-fast", "torch-compile"):
        on_cuda = variant.device.startswith("cuda")
        # on the CPU inductor's default mode: max-autotune benchmarks GEMM templates for minutes on two cores
        compile_mode = ("max-autotune-no-cudagraphs" if on_cuda else "default") \
            if variant.runtime == "torch-compile" else None
        return create_backend("torch-fast", unet=unet, vq=vq, schedule=schedule, device=variant.device,
                              precision=variant.precision, compile_mode=compile_mode)
    if variant.runtime == "onnxruntime":
        onnx_dir = _onnx_graphs(contender, models, schedule, variant.precision, config, workdir)
        ort_device = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
                      "TensorrtExecutionProvider": "tensorrt"}[variant.provider or "CPUExecutionProvider"]
        if ort_device != "cpu" and ":" in variant.device:
            ort_device += ":" + variant.device.split(":", 1)[1]
        # same thread count as torch when --threads is given, so the runtimes compete fairly
        return create_backend("onnxruntime", export_dir=str(onnx_dir), precision=variant.precision,
                              device=ort_device, intra_op_threads=config.threads)
    if variant.runtime == "openvino":
        onnx_dir = _onnx_graphs(contender, models, schedule, variant.precision, config, workdir)
        return create_backend("openvino", export_dir=str(onnx_dir), precision=variant.precision, device="cpu",
                              threads=config.threads, cache_dir=workdir / "ov-cache")
    if variant.runtime == "tensorrt":
        if not config.engine_dir:
            raise RSDError("TensorRT needs prebuilt engines: pass --engine DIR (an rsd-export folder with engines)")
        engine_dir = Path(config.engine_dir)
        sub = engine_dir / contender.key
        device = variant.device if variant.device.startswith("cuda") else "cuda"
        return create_backend("tensorrt", engine_dir=str(sub if sub.is_dir() else engine_dir),
                              precision=variant.precision, device=device)
    raise RSDError(f"unknown runtime {variant.runtime}")


def _ort_precisions(config: BenchConfig) -> List[str]:
    """ONNX graph precisions the run needs (OpenVINO bf16 compiles the fp32 graphs)."""
    wanted = {b.rsplit("-", 1)[1] for b in config.backends if b.startswith(("ort", "ov-"))}
    return sorted((wanted - {"bf16", "auto"}) | {"fp32"})


def _onnx_graphs(contender: Contender, models: ModelSet, schedule, precision: str, config: BenchConfig,
                 workdir: Path) -> Path:
    """A folder of graphs (rsd-export layout: manifest.json + graphs) for this contender.

    Looked up in ``--onnx DIR`` (``DIR/<contender>/`` or ``DIR`` itself); when absent, exported
    there (or into a temp folder without ``--onnx``) with ``export_models``, holding every ONNX
    Runtime precision the run asks for. Parity and accuracy checks are reduced to one shape and one
    image here (rsd-export does the full checks). Multi-step contenders reuse the one-step export of
    the same UNet: their rows are timing-only anyway (see ``denoise_step_for``).
    """
    root = Path(config.onnx_dir) if config.onnx_dir else workdir / "onnx"
    for cand in (root / contender.key, root):
        if (cand / "manifest.json").is_file():
            return cand
    unet = models.unets[contender.key]
    if not contender.one_step:
        for other in CONTENDERS.values():
            if other.one_step and models.unets.get(other.key) is unet and (root / other.key / "manifest.json").is_file():
                return root / other.key
    from rsd_deploy.export.exporter import ExportConfig, export_models

    out = root / contender.key
    precisions = _ort_precisions(config)
    m = models.input_multiple
    size = max(m, 64 // m * m)
    shape = (1, size, size)
    logger.info("exporting %s graphs (%s) into %s", contender.label, ", ".join(precisions), out)
    export_models(ExportConfig(out_dir=out, unet=unet, vq_model=models.vq, model=contender.key,
                               fp16="fp16" in precisions, int8="int8" in precisions, calib_count=4,
                               accuracy_count=1, export_shape=shape, verify_shapes=[shape], min_shape=shape,
                               opt_shape=shape, max_shape=(max(4, config.batch), 4 * size, 4 * size),
                               demo=models.random_weights, seed=config.seed))
    return out


# ---------------------------------------------------------------- the run

def _check_size(size: Size, multiple: int, tile: Optional[int]) -> None:
    h, w = size
    if (h % multiple or w % multiple) and not tile:
        raise ShapeError(f"LR size {h}x{w} is not a multiple of {multiple} (the model's input multiple); "
                         f"choose such a size or pass --tile")


def _entry(variant: BackendVariant, contender: Contender, size: Size, config: BenchConfig, **kw) -> dict:
    d = {"contender": contender.key, "label": contender.label, "backend": variant.key,
         "runtime": variant.runtime, "precision": variant.precision, "device": variant.device,
         "lr_size": list(size), "sr_size": [4 * size[0], 4 * size[1]], "batch": config.batch,
         "nfe": contender.nfe, "status": "ok", "reason": None}
    d.update(kw)
    return d


def measure_entry(backend: Backend, contender: Contender, schedule, size: Size, config: BenchConfig,
                  timer: Optional[DeviceTimer] = None) -> dict:
    """Time one contender at one size on one backend: warm-up, repeats, stages, memory."""
    timer = timer or DeviceTimer(backend.device)
    h, w = size
    gen = torch.Generator(device=backend.device if backend.device.type == "cuda" else "cpu")
    gen.manual_seed(config.seed)
    lq = (torch.rand((config.batch, 3, h, w), generator=torch.Generator().manual_seed(config.seed)) * 2 - 1)
    lq = lq.to(backend.device)
    steps, timing_only = denoise_step_for(backend, contender, schedule)

    def run(rec) -> torch.Tensor:
        with torch.inference_mode():
            noises = draw_noises(contender, schedule, (config.batch, 3, h, w), gen, backend.device)
            return super_resolve(backend, contender, schedule, lq, noises, rec, steps)

    m = measure(run, timer, warmup=config.warmup, repeats=config.repeats)
    out = m.to_dict()
    out["throughput_ips"] = config.batch / (m.total.p50 / 1000.0) if m.total.p50 > 0 else None
    out["timing_only_steps"] = timing_only
    return out


class StagedBackend(Backend):
    """Proxy that marks every call of the wrapped backend as a stage of the current recorder, so
    code we do not own (the SR pipeline's tiling loop) is timed per stage too."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.supported_steps = inner.supported_steps
        self.recorder = NullRecorder()

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        with self.recorder.stage("encode"):
            return self.inner.encode(image)

    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        with self.recorder.stage("denoise"):
            return self.inner.denoise(z_t, step, lq, noise)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        with self.recorder.stage("decode"):
            return self.inner.decode(z)


def measure_tiled_entry(backend: Backend, contender: Contender, schedule, size: Size, config: BenchConfig,
                        multiple: int, timer: Optional[DeviceTimer] = None) -> dict:
    """Time one large image through the SR pipeline's tiling (rsd_deploy.pipeline.sr_pipeline):
    tiles of ``config.tile`` LR px with ``config.tile_overlap`` feathered overlap, ``config.batch``
    tiles per backend call. Throughput counts whole images."""
    import numpy as np

    from rsd_deploy.pipeline.sr_pipeline import SRPipeline

    timer = timer or DeviceTimer(backend.device)
    proxy = StagedBackend(backend)
    info = ModelInfo(kind=ModelKind(contender.key), schedule=schedule, input_multiple=multiple,
                     noise_channels=contender.noise_channels, label=contender.label)
    pipe = SRPipeline(proxy, info, TileConfig(tile=config.tile, overlap=config.tile_overlap, batch=config.batch),
                      seed=config.seed)
    rgb = np.random.default_rng(config.seed).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)

    def run(rec) -> None:
        proxy.recorder = rec
        try:
            pipe.upscale_array(rgb)
        finally:
            proxy.recorder = NullRecorder()

    m = measure(run, timer, warmup=config.warmup, repeats=config.repeats)
    out = m.to_dict()
    out["throughput_ips"] = 1000.0 / m.total.p50 if m.total.p50 > 0 else None
    out["timing_only_steps"] = False
    out["tiled"] = {"tile": pipe.tiling.tile, "overlap": config.tile_overlap, "tiles_per_call": config.batch}
    return out


def build_models(config: BenchConfig) -> ModelSet:
    contenders = parse_contenders(config.contenders)
    if config.checkpoints:
        if not config.vq:
            raise RSDError("checkpoints given without --vq; pass the VQ autoencoder checkpoint too")
        return checkpoint_models(contenders, {k: Path(v) for k, v in config.checkpoints.items()}, Path(config.vq))
    return random_models(contenders, arch=config.arch, seed=config.seed)


#: quality(config, models, variants, contenders, factory, workdir) -> the results' "quality" section
QualityFn = Callable[..., dict]


def run_benchmark(config: BenchConfig, models: Optional[ModelSet] = None,
                  backend_factory: Optional[BackendFactory] = None, progress: bool = True,
                  quality: Optional[QualityFn] = None) -> dict:
    """Measure every (backend variant, contender, size); returns the results dict (see report.py).

    ``quality`` (``bench.quality.run_quality``, passed in by ``benchmark_and_report`` so that the
    runner does not import the quality side that builds on it) runs when ``config.quality_lr`` is set."""
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    factory = backend_factory or default_backend_factory
    contenders = parse_contenders(config.contenders)
    variants = [parse_backend_variant(b, config.device) for b in config.backends]
    models = models or build_models(config)
    multiple = models.input_multiple
    entries: List[dict] = []
    total = len(variants) * len(contenders) * len(config.sizes)
    bar = tqdm(total=total, desc="rsd-bench", unit="run", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="rsd-bench-") as tmp:
        for variant in variants:
            reason = unavailable_reason(variant) if backend_factory is None else None
            for contender in contenders:
                schedule = schedule_for(contender)
                backend: Optional[Backend] = None
                skip_reason = reason
                if skip_reason is None:
                    try:
                        backend = factory(variant, contender, models, schedule, config, Path(tmp))
                    except (RSDError, ImportError) as e:  # ImportError: an optional runtime module is absent
                        skip_reason = str(e).splitlines()[0]
                        logger.warning("%s / %s: %s", variant.key, contender.label, e)
                for size in config.sizes:
                    bar.set_postfix_str(f"{variant.key} {contender.key} {size[0]}x{size[1]}")
                    if backend is None:
                        entries.append(_entry(variant, contender, size, config, status="skipped",
                                              reason=skip_reason))
                        bar.update(1)
                        continue
                    try:
                        tiled = bool(config.tile and (size[0] > config.tile or size[1] > config.tile))
                        if not tiled:
                            _check_size(size, multiple, None)
                            data = measure_entry(backend, contender, schedule, size, config)
                        else:
                            data = measure_tiled_entry(backend, contender, schedule, size, config, multiple)
                        entries.append(_entry(variant, contender, size, config, **data))
                    except (RSDError, RuntimeError, ValueError) as e:
                        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                        if "out of memory" in msg.lower():
                            msg = f"out of memory ({msg[:120]})"
                        logger.warning("%s / %s / %s: %s", variant.key, contender.label, size, msg)
                        entries.append(_entry(variant, contender, size, config, status="failed", reason=msg))
                        if variant.device.startswith("cuda"):
                            torch.cuda.empty_cache()
                    bar.update(1)
                if backend is not None:
                    backend.close()
        bar.close()
        if config.official_repo:
            from rsd_deploy.bench.official import official_entries

            entries += official_entries(config, models, contenders, _entry)
        results = {"settings": config.to_dict(), "entries": entries,
                   "random_weights": models.random_weights, "arch": models.arch, "model_sources": models.sources,
                   "input_multiple": multiple}
        if config.quality_lr and quality is not None:
            # same work folder: graphs exported for the timing are reused
            results["quality"] = quality(config, models, variants, contenders, factory, Path(tmp))
    return results


def parse_size(text: str) -> Size:
    """``64`` -> (64, 64); ``96x128`` -> (96, 128) (LR height x width)."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text), int(text)
    except ValueError:
        raise ConfigError(f"bad size {text!r}; use N or HxW in LR pixels, e.g. 64 or 96x128") from None


__all__ = ["BenchConfig", "run_benchmark", "super_resolve", "draw_noises", "measure_entry", "parse_size",
           "CONTENDERS"]
