"""Build a TensorRT plan from an ONNX graph: strongly typed network, one profile, builder config,
timing cache. The only module that calls TensorRT's builder; the runtime lives in
:mod:`rsd_deploy.backends.trt_runtime`.

One code path serves TensorRT 10.12+ (the Jetson/edge lane) and 11.x; where the two differ we
branch on ``hasattr`` instead of on version numbers:

* ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` must be set on 10.x; on 11.x every network is
  strongly typed and the flag is ignored or gone, so it is set only when it exists.
* Precision comes only from the ONNX graph (Casts, Q/DQ): no FP16/INT8 builder flag is ever set
  (10.x refuses them on strongly typed networks; 11.x removed them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from rsd_deploy.backends.trt_env import require_tensorrt, trt_logger
from rsd_deploy.errors import BackendUnavailableError, ConfigError, ExportError, ShapeError
from rsd_deploy.fileio import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorrt

log = logging.getLogger(__name__)

Shape4 = Tuple[int, int, int, int]


@dataclass(frozen=True)
class BuilderFlags:
    """The builder settings besides the profile; the one definition both ``EngineBuildOptions``
    (what ``rsd-export --build-engine`` takes) and ``BuildSettings`` (one plan) use."""

    workspace_gib: float = 4.0  # builder scratch limit; lower it when tactics OOM
    optimization_level: int = 3  # TensorRT builder optimisation level 0..5 (3 = TensorRT default)
    tf32: bool = False  # allow TF32 in fp32 layers (faster, ~1e-3 relative error); off: fp32 is fp32
    version_compatible: bool = False  # plan loads on newer TensorRT (and in the lean runtime)
    exclude_lean_runtime: bool = False  # with version_compatible: smaller plan, needs the lean runtime installed
    hardware_compatible: bool = False  # AMPERE_PLUS: one plan for every sm80+ discrete GPU, slower

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gib * (1 << 30))

    def validate_flags(self) -> None:
        """Raise ConfigError naming the bad option."""
        if not self.workspace_gib > 0:
            raise ConfigError(f"workspace must be > 0 GiB, got {self.workspace_gib}")
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"optimization level must be 0..5, got {self.optimization_level}")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ConfigError("exclude_lean_runtime only applies to version-compatible engines; "
                              "set version_compatible=True as well, or drop it")

    def builder_flags(self) -> "BuilderFlags":
        """Just the builder settings (drops the fields a subclass adds)."""
        return BuilderFlags(**{name: getattr(self, name) for name in BuilderFlags.__dataclass_fields__})

    def flags_key(self) -> Dict[str, Any]:
        return {
            "workspace_bytes": self.workspace_bytes,
            "optimization_level": int(self.optimization_level),
            "tf32": bool(self.tf32),
            "version_compatible": bool(self.version_compatible),
            "exclude_lean_runtime": bool(self.exclude_lean_runtime),
            "hardware_compatible": bool(self.hardware_compatible),
        }


@dataclass(frozen=True)
class BuildSettings:
    """Everything besides the ONNX that changes a plan; all of it goes into the engine cache key.

    ``profile`` maps each graph input name to full NCHW (min, opt, max) shapes.
    """

    profile: Mapping[str, Tuple[Shape4, Shape4, Shape4]]
    flags: BuilderFlags = field(default_factory=BuilderFlags)

    def to_key(self) -> Dict[str, Any]:
        """JSON-ready description used in cache keys and sidecars (layout unchanged since KEY_VERSION 1)."""
        return {
            "profile": {name: [list(s) for s in shapes] for name, shapes in sorted(self.profile.items())},
            **self.flags.flags_key(),
        }


def _network_flags() -> int:
    import tensorrt as trt

    # 10.x: strong typing must be requested; 11.x: always strongly typed (flag ignored or removed)
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _builder_flag(name: str) -> "tensorrt.BuilderFlag":
    import tensorrt as trt

    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise BackendUnavailableError(
            f"this TensorRT ({trt.__version__}) has no BuilderFlag.{name}; drop the option that needs it"
        )
    return flag


def _configure(builder: Any, network: Any, settings: BuildSettings, onnx_name: str) -> Any:
    """Builder config: memory, level, verbosity, flags and the one optimisation profile."""
    import tensorrt as trt

    flags = settings.flags
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, flags.workspace_bytes)
    config.builder_optimization_level = int(flags.optimization_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer dtypes for the inspector
    if flags.tf32:
        config.set_flag(_builder_flag("TF32"))
    else:
        config.clear_flag(_builder_flag("TF32"))
    if flags.version_compatible:
        config.set_flag(_builder_flag("VERSION_COMPATIBLE"))
        if flags.exclude_lean_runtime:
            config.set_flag(_builder_flag("EXCLUDE_LEAN_RUNTIME"))
    if flags.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS

    profile = builder.create_optimization_profile()
    for name, (smallest, optimal, largest) in settings.profile.items():
        try:  # the bindings raise a bare RuntimeError/ValueError for an invalid min/opt/max
            profile.set_shape(name, trt.Dims(list(smallest)), trt.Dims(list(optimal)), trt.Dims(list(largest)))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ShapeError(
                f"{onnx_name}: TensorRT refused the profile of input {name} (min {tuple(smallest)}, opt "
                f"{tuple(optimal)}, max {tuple(largest)}): {exc}; pass min <= opt <= max of the graph's rank"
            ) from None
    if config.add_optimization_profile(profile) < 0:  # -1: the profile is invalid (IBuilderConfig docs)
        raise ShapeError(f"{onnx_name}: TensorRT refused the optimisation profile {dict(settings.profile)}; "
                         "check --min-shape/--opt-shape/--max-shape against the graph's inputs")
    return config


def _attach_timing_cache(config: Any, path: Optional[Path]) -> None:
    """Load the timing cache at ``path`` when there is one; a corrupt or foreign one is replaced."""
    cache_bytes = b""
    if path is not None and path.is_file():
        cache_bytes = path.read_bytes()
        log.info("timing cache: loaded %s (%d bytes)", path.name, len(cache_bytes))
    cache = config.create_timing_cache(cache_bytes)
    if cache is not None and config.set_timing_cache(cache, False):
        return
    log.warning("timing cache %s was rejected (corrupt or from another GPU/TensorRT); building without it", path)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise ExportError("TensorRT could not create an empty timing cache (see the TensorRT log)")


def build_serialized_engine(
    onnx_path: Path, settings: BuildSettings, timing_cache_path: Optional[Path] = None
) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized plan.

    The timing cache at ``timing_cache_path`` (keyed by GPU + TensorRT version by the caller) is
    loaded when present and saved back after a successful build.
    Raises ExportError when parsing or building fails, with TensorRT's own messages.
    """
    require_tensorrt()
    import tensorrt as trt

    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT could not parse {onnx_path.name}: {' | '.join(errors) or 'no parser message'}; "
            f"check the graph with `polygraphy check lint {onnx_path}`"
        )

    graph_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(graph_inputs) != sorted(settings.profile):
        raise ExportError(
            f"{onnx_path.name} has inputs {graph_inputs} but the export spec profiles "
            f"{sorted(settings.profile)}; re-export the graph with rsd-export"
        )
    config = _configure(builder, network, settings, onnx_path.name)
    _attach_timing_cache(config, timing_cache_path)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log); "
            "if it could not find an implementation, lower --max-shape or raise the workspace"
        )
    if timing_cache_path is not None:
        atomic_write_bytes(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))
