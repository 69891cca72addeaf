"""OpenVINO backend: runs the ONNX graphs of an ``rsd-export`` folder with Intel's OpenVINO runtime.

OpenVINO reads our ONNX graphs directly (no conversion step) and on CPUs with AVX512-BF16 / AMX runs
them in bf16 through its inference-precision hint, and the INT8 Q/DQ graphs with int8 kernels.

Precision (``precision``):

* ``fp32``: ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO's CPU default is bf16 where the CPU has it, so
  fp32 must be asked for).
* ``bf16``: ``INFERENCE_PRECISION_HINT=bf16`` on CPUs with native bf16 (see ``capabilities``); refused
  elsewhere (emulated bf16 is slower than fp32). bf16 over the whole decoder flipped VQ codes (max abs
  error 0.54 in the image), so the decoder graph is cut after its VQ quantiser (distances, ArgMin,
  codebook Gather: ``split_at_quantizer``) and the quantiser part is compiled fp32. The runtime
  attribute ``disable_fp16_compression`` on those ops was tried first: the CPU plugin ran them in bf16
  regardless (OpenVINO 2026.4).
* ``int8``: the folder's int8 (Q/DQ) graphs; the ops left float (and any graph the export kept fp32)
  run in bf16 where the CPU has it (``int8_float``), the quantiser cut off and fp32 the same way.

Compiled models are cached on disk (``cache_dir``; OpenVINO's ``CACHE_DIR``), so a second process does
not recompile; a cache entry that cannot be read is dropped and rebuilt with one warning line.
``hint``: ``latency`` (one request at a time, the pipeline's use) or ``throughput``; ``threads``:
``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, all cores).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from rsd_deploy.backends.base import register_backend
from rsd_deploy.backends.exported import ExportFolderBackend
from rsd_deploy.bundle.specs import Role
from rsd_deploy.errors import BackendUnavailableError, ConfigError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
HINTS = ("latency", "throughput")
INSTALL_HINT = "pip install rsd-deploy[openvino]"
#: node-name prefixes (ONNX node names, kept by OpenVINO as friendly names) that must run in fp32
PRECISE_PREFIXES = ("/quantize/", "/vq/quantize/")


def import_openvino() -> Any:
    """The ``openvino`` module, or BackendUnavailableError with the install line."""
    try:
        import openvino
    except ImportError:
        raise BackendUnavailableError(f"the openvino backend needs the package 'openvino'; install it with "
                                      f"{INSTALL_HINT}") from None
    return openvino


def default_cache_dir() -> Path:
    """``$RSD_DEPLOY_CACHE`` or ``$XDG_CACHE_HOME/rsd-deploy`` (``~/.cache/rsd-deploy``), ``/openvino``."""
    root = os.environ.get("RSD_DEPLOY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "rsd-deploy")
    return Path(root) / "openvino"


@dataclass(frozen=True)
class OpenVinoOptions:
    """How the OpenVINO backend compiles the graphs (see the module docstring).

    export_dir: the export folder (``model_dir`` is an alias, as the pipeline loader passes it).
    precision: fp32 (default), bf16 or int8. device: cpu (default; gpu/npu are OpenVINO's, untested
    here). threads: INFERENCE_NUM_THREADS (None: all cores). hint: latency (default) or throughput.
    cache_dir / use_cache: OpenVINO's on-disk model cache (default ``default_cache_dir()``).
    precise_quantizer: compile the decoder's VQ quantiser fp32 (default True; False only to measure).
    verify_files: check every graph's sha256 against the manifest (default True).
    """

    export_dir: Optional[Union[str, Path]] = None
    model_dir: Optional[Union[str, Path]] = None
    precision: str = "fp32"
    device: str = "cpu"
    threads: Optional[int] = None
    hint: str = "latency"
    cache_dir: Optional[Path] = None  # None: default_cache_dir()
    use_cache: bool = True
    precise_quantizer: bool = True  # False only to measure what bf16 does to the VQ codes
    int8_float: str = "auto"  # int8: precision of the ops left float (auto: bf16 where native, else fp32)
    verify_files: bool = True

    @property
    def folder(self) -> Path:
        folder = self.export_dir if self.export_dir is not None else self.model_dir
        if folder is None:
            raise ConfigError("the openvino backend needs the export folder (rsd-upscale --onnx DIR --runtime openvino)")
        return Path(folder)

    def validate(self) -> None:
        self.folder  # noqa: B018 - raises without a folder
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r} for OpenVINO; choose one of {', '.join(PRECISIONS)}")
        if self.int8_float not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"int8_float must be auto, fp32 or bf16; got {self.int8_float!r}")
        if self.hint not in HINTS:
            raise ConfigError(f"unknown OpenVINO performance hint {self.hint!r}; choose latency or throughput")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if str(self.device).split(":", 1)[0].lower() not in ("cpu", "gpu", "npu", "auto"):
            raise ConfigError(f"unknown OpenVINO device {self.device!r}; use cpu (or gpu, npu)")

    @property
    def ov_device(self) -> str:
        return str(self.device).upper()

    @property
    def resolved_cache_dir(self) -> Optional[Path]:
        if not self.use_cache:
            return None
        return default_cache_dir() if self.cache_dir is None else Path(self.cache_dir)


def _quantizer_region(model: Any, prefixes=PRECISE_PREFIXES) -> set:
    """Names of the quantiser's ops: those named with a quantiser prefix and everything they depend on
    (OpenVINO's decomposition adds unnamed ops, e.g. the TopK behind ArgMin)."""
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    stack = [op for name, op in by_name.items() if any(name.startswith(p) for p in prefixes)]
    region = set()
    while stack:
        op = stack.pop()
        name = op.get_friendly_name()
        if name in region:
            continue
        region.add(name)
        stack.extend(v.get_node() for v in op.input_values())
    return region


def quantizer_boundary(model: Any, prefixes=PRECISE_PREFIXES) -> List[Any]:
    """Outputs of the quantiser's (non-constant) ops that ops after it consume: where the graph is cut."""
    region = _quantizer_region(model, prefixes)
    outs = []
    for op in model.get_ordered_ops():
        if op.get_friendly_name() not in region or op.get_type_name() in ("Constant", "Parameter"):
            continue
        for out in op.outputs():
            if any(t.get_node().get_friendly_name() not in region for t in out.get_target_inputs()):
                outs.append(out)
    return outs


def split_at_quantizer(core: Any, path: Path) -> Optional[tuple]:
    """(head, tail) ``ov.Model`` s of a decoder graph cut after its VQ quantiser, or None when the graph has
    no quantiser. The head (distances, ArgMin, codebook Gather) is compiled fp32, the tail at the inference
    precision: OpenVINO's CPU plugin ignores ``disable_fp16_compression`` on these ops under a bf16 hint
    (measured: every quantiser op ran bf16 with or without the mark), so the cut is what keeps them fp32."""
    import openvino as ov
    import openvino.opset13 as opset

    head_src = core.read_model(str(path))
    boundary = quantizer_boundary(head_src)
    if not boundary:
        return None
    head = ov.Model([opset.result(o) for o in boundary], list(head_src.get_parameters()), "decoder_quantizer")
    tail_src = core.read_model(str(path))
    tail_boundary = quantizer_boundary(tail_src)
    region = _quantizer_region(tail_src)
    params = []
    for i, out in enumerate(tail_boundary):
        param = opset.parameter(out.get_partial_shape(), out.get_element_type(), name=f"quantized_{i}")
        for target in list(out.get_target_inputs()):
            if target.get_node().get_friendly_name() not in region:
                target.replace_source_output(param.output(0))
        params.append(param)
    tail = ov.Model(tail_src.get_results(), params, "decoder_tail")
    return head, tail


def runtime_precisions(compiled: Any) -> Dict[str, str]:
    """{executed op name: runtime precision} from a compiled model's execution graph (for checks)."""
    out = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        value = rt["runtimePrecision"] if "runtimePrecision" in rt else None
        out[op.get_friendly_name()] = str(value.astype(str)) if hasattr(value, "astype") else str(value)
    return out


@register_backend("openvino")
class OpenVinoBackend(ExportFolderBackend):
    """encode / denoise / decode through OpenVINO compiled models of one precision (see OpenVinoOptions)."""

    name = "openvino"
    Options = OpenVinoOptions
    label_prefix = "OpenVINO"

    def __init__(self, options: OpenVinoOptions):
        options.validate()
        ov = import_openvino()
        from rsd_deploy.backends import capabilities

        self.options = options
        self.precision = options.precision
        if options.precision == "bf16" and options.ov_device.startswith("CPU") and not capabilities.cpu_has_bf16():
            raise BackendUnavailableError("this CPU has no native bf16 (AVX512-BF16 or AMX-BF16): OpenVINO would "
                                          "emulate it, slower than fp32; use --precision fp32 (or int8)")
        graph_precision = "int8" if options.precision == "int8" else "fp32"
        graphs = self._open_folder(options.folder, graph_precision, options.verify_files)
        self.core = ov.Core()
        self._config = self._compile_config(ov)
        # fp32 needs no cut; on other devices the inference-precision hint differs (not split there)
        self._split_decoder = (options.precise_quantizer and self._config.get("INFERENCE_PRECISION_HINT") == "bf16")
        self.compiled: Dict[str, Any] = {}
        self._ov_version = str(ov.get_version()).split("-")[0]
        self._stale: List[str] = []
        for g in ("encoder", "denoiser", "decoder"):
            variant = graphs[g]["variants"][graph_precision]
            path = self.export_dir / variant["file"]
            key = f"{g}-{str(variant.get('sha256', 'nohash'))[:16]}-{options.precision}"
            split = split_at_quantizer(self.core, path) if g == "decoder" and self._split_decoder else None
            if split is None:  # (a whole decoder under bf16 is another model than its tail: another folder)
                whole = "-whole" if g == "decoder" and self._config.get("INFERENCE_PRECISION_HINT") == "bf16" else ""
                self.compiled[g] = self._compile(self.core.read_model(str(path)), self._config, key + whole)
            else:  # the quantiser in fp32, the rest at the inference precision
                head, tail = split
                self.compiled["quantizer"] = self._compile(head, dict(self._config, INFERENCE_PRECISION_HINT="f32"),
                                                           key + "-quantizer")
                self.compiled[g] = self._compile(tail, self._config, key)
        if self._stale:  # one line for all graphs
            logger.warning("OpenVINO model cache %s was stale for %s (not loadable by OpenVINO %s); recompiled and "
                           "rewrote it", options.resolved_cache_dir, ", ".join(self._stale), self._ov_version)
        self.requests = {g: c.create_infer_request() for g, c in self.compiled.items()}
        self._read_manifest_constants()
        logger.info("openvino backend: %s (%s, %s hint, %s threads) on %s", self.export_dir, self.precision,
                    options.hint, options.threads or "default", options.ov_device)

    # -- compilation ---------------------------------------------------------------------------
    def _compile_config(self, ov: Any) -> Dict[str, str]:
        o = self.options
        config = {"PERFORMANCE_HINT": o.hint.upper()}
        if o.ov_device.startswith("CPU"):
            config["INFERENCE_PRECISION_HINT"] = "bf16" if o.precision == "bf16" else "f32"
            if o.precision == "int8":
                from rsd_deploy.backends.capabilities import cpu_has_bf16

                bf16 = o.int8_float == "bf16" or (o.int8_float == "auto" and cpu_has_bf16())
                config["INFERENCE_PRECISION_HINT"] = "bf16" if bf16 else "f32"
        if o.threads:
            config["INFERENCE_NUM_THREADS"] = str(int(o.threads))
        if o.hint == "latency":
            config["NUM_STREAMS"] = "1"
        return config

    def _compile(self, model: Any, config: Dict[str, str], key: str) -> Any:
        """Compile ``model``; with a cache, in its own folder ``<cache>/<key>`` (key: graph, sha256, precision,
        part), so that a blob there that OpenVINO does not load is known to be stale."""
        root = self.options.resolved_cache_dir
        device = self.options.ov_device
        if root is None:
            return self.core.compile_model(model, device, config)
        cache = root / key
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            logger.warning("OpenVINO model cache %s cannot be created (%s); compiling without a cache", cache, e)
            return self.core.compile_model(model, device, config)
        old_blobs = sorted(cache.glob("*.blob"))
        config = dict(config, CACHE_DIR=str(cache))
        try:
            compiled = self.core.compile_model(model, device, config)
        except RuntimeError as e:  # a blob OpenVINO chokes on: drop the folder and rebuild once
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            logger.warning("OpenVINO model cache %s is corrupt (%s); rebuilt it", cache, first)
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True, exist_ok=True)
            return self.core.compile_model(model, device, config)
        if old_blobs and not bool(compiled.get_property("LOADED_FROM_CACHE")):
            # OpenVINO silently recompiles past a blob it cannot use (another OpenVINO version, a corrupt
            # file): say so once, and drop the dead blobs so that the next run loads the fresh one
            fresh = set(cache.glob("*.blob")) - set(old_blobs)
            self._stale.append(key)
            for blob in old_blobs:
                if blob not in fresh and len(list(cache.glob("*.blob"))) > 1:
                    blob.unlink(missing_ok=True)
        return compiled

    def _infer(self, graph: str, feeds: Any) -> torch.Tensor:
        result = self.requests[graph].infer(feeds)
        return torch.from_numpy(np.array(next(iter(result.values())), dtype=np.float32, copy=True))

    def _run(self, graph: str, inputs: Dict[Any, Optional[np.ndarray]]) -> torch.Tensor:
        """Feed the graph by tensor role (names from the bundle's spec); one output."""
        return self._infer(graph, self.specs[graph].feeds(inputs))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 4h, 4w) float32 in [-1, 1] -> (B, 3, h, w) float32 continuous latent (CPU)."""
        self._check(image, 4, "image")
        return self._run("encoder", {Role.LR_UPSAMPLED: self._np(image)})

    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x0 (B, 3, h, w) from the unscaled prior sample z_T at step T-1 (folded in the graph)."""
        self._check_denoise(z_t, step, noise)
        return self._run("denoiser", {Role.Z_T: self._np(z_t), Role.LQ: self._np(lq),
                                      Role.STUDENT_NOISE: None if noise is None else self._np(noise)})

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) latent -> quantise (fp32) -> (B, 3, 4h, 4w) float32, not clamped."""
        self._check(z, 1, "latent")
        feeds = self.specs["decoder"].feeds({Role.X0: self._np(z)})
        if "quantizer" not in self.requests:
            return self._infer("decoder", feeds)
        quantized = self.requests["quantizer"].infer(feeds)
        return self._infer("decoder", [np.asarray(v) for v in quantized.values()])

    def close(self) -> None:
        self.requests.clear()
        self.compiled.clear()
