"""The one small interface every runtime implements for the SR pipeline, and the registry that
builds backends from their options.

A backend owns three networks: the VQ encoder, the denoiser (UNet) and the VQ decoder (with its
quantiser). Tensors cross the interface as CPU or device ``torch.Tensor`` in NCHW float32 (a
backend may compute in lower precision inside). The pipeline does everything else (image I/O,
padding, bicubic x4, noise, the sampler's schedule arithmetic, tiling, blending).

Every backend is built from its own options dataclass (``TorchOptions``, ``OrtOptions``, ...,
each field with its documented default) through :func:`create_backend`; the registry imports a
backend's module only when it is asked for, so optional runtimes stay optional. Adding a backend
is one line in :data:`BACKEND_MODULES` plus its module.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar

import torch

from rsd_deploy.errors import BackendUnavailableError, ConfigError


class Backend(abc.ABC):
    """encode / denoise / decode; see the module docstring for conventions.

    Subclasses set ``Options`` to their options dataclass and take one instance of it.
    """

    name: str = "abstract"
    #: the options dataclass this backend is built from
    Options: Type[Any]
    #: steps the denoiser can run (None: any step index; {T-1}: a one-step graph with t folded in)
    supported_steps: Optional[frozenset] = None

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where the tensors this backend returns live."""

    @abc.abstractmethod
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 4h, 4w) image in [-1, 1] -> (B, 3, h, w) continuous latent z_y."""

    @abc.abstractmethod
    def denoise(self, z_t: torch.Tensor, step: int, lq: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x0 prediction from the **unscaled** latent z_t at step index ``step``.

        For the one-step models z_t is the prior sample z_T = z_y + kappa sqrt(eta_T) eps that the
        sampler draws on the host (``Schedule.prior``); the exported graphs take it as it is.
        ``lq`` is the LR image in [-1, 1] at latent size; ``noise`` the RSD student's extra noise
        map (B, noise_channels, h, w) or None. The backend applies the input scaling
        1/sqrt(kappa^2 eta_step + 1) itself (a graph may have it folded in).
        """

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) latent -> quantise (fp32 distances) -> (B, 3, 4h, 4w) image, not clamped."""

    def close(self) -> None:  # pragma: no cover - default no-op
        """Free device memory, sessions, engines."""


#: registry name -> (module under rsd_deploy.backends, pip extra that installs its runtime)
BACKEND_MODULES: Dict[str, Tuple[str, str]] = {
    "torch": ("torch_backend", "dev"),
    "torch-fast": ("fast_torch_backend", "dev"),
    "onnxruntime": ("ort_backend", "onnx"),
    "openvino": ("openvino_backend", "openvino"),
    "tensorrt": ("trt_backend", "trt"),
}

_REGISTRY: Dict[str, Type[Backend]] = {}

B = TypeVar("B", bound=Type[Backend])


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: ``@register_backend("torch")`` on a Backend subclass with ``Options``."""

    def deco(cls: B) -> B:
        if not dataclasses.is_dataclass(getattr(cls, "Options", None)):
            raise TypeError(f"backend {name!r}: {cls.__name__}.Options must be its options dataclass")
        _REGISTRY[name] = cls
        return cls

    return deco


def backend_class(name: str) -> Type[Backend]:
    """The registered class of backend ``name``, importing its module on first use."""
    if name not in _REGISTRY and name in BACKEND_MODULES:
        module, extra = BACKEND_MODULES[name]
        try:
            importlib.import_module(f"rsd_deploy.backends.{module}")
        except ModuleNotFoundError as e:
            raise BackendUnavailableError(f"the {name} backend needs the missing package {e.name!r}; "
                                          f"install it with pip install rsd-deploy[{extra}]") from None
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_MODULES)}")
    return _REGISTRY[name]


def backend_options(name: str, **fields: Any) -> Any:
    """The options dataclass of backend ``name`` filled from ``fields`` (ConfigError on unknown ones)."""
    options_cls = backend_class(name).Options
    known = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"the {name} backend has no option {', '.join(unknown)}; its options are "
                          f"{', '.join(sorted(known))}")
    return options_cls(**fields)


def create_backend(name: str, options: Any = None, **fields: Any) -> Backend:
    """Create backend ``name`` ('torch', 'torch-fast', 'onnxruntime', 'openvino', 'tensorrt', ...) from its
    options dataclass, or from keyword fields of it."""
    cls = backend_class(name)
    if options is None:
        options = backend_options(name, **fields)
    elif fields:
        options = dataclasses.replace(options, **fields)
    if not isinstance(options, cls.Options):
        raise ConfigError(f"the {name} backend takes {cls.Options.__name__}, not {type(options).__name__}")
    return cls(options)  # type: ignore[call-arg]
