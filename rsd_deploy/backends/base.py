"""The one small interface every runtime implements for the SR pipeline.

A backend owns three networks: the VQ encoder, the denoiser (UNet) and the VQ decoder (with its
quantiser). Tensors cross the interface as CPU or device ``torch.Tensor`` in NCHW float32 (a
backend may compute in lower precision inside). The pipeline does everything else (image I/O,
padding, bicubic x4, noise, schedule arithmetic, tiling, blending).
"""
from __future__ import annotations

import abc
from typing import Callable, Dict, Optional

import torch


class Backend(abc.ABC):
    """encode / denoise / decode; see the module docstring for conventions."""

    name: str = "abstract"
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

        ``lq`` is the LR image in [-1, 1] at latent size; ``noise`` the RSD student's extra noise
        map (B, noise_channels, h, w) or None. The backend applies the input scaling
        1/sqrt(kappa^2 eta_step + 1) itself (a graph may have it folded in).
        """

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) latent -> quantise (fp32 distances) -> (B, 3, 4h, 4w) image, not clamped."""

    def close(self) -> None:  # pragma: no cover - default no-op
        """Free device memory, sessions, engines."""


_REGISTRY: Dict[str, Callable[..., Backend]] = {}


def register_backend(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        _REGISTRY[name] = factory
        return factory

    return deco


def create_backend(name: str, **options) -> Backend:
    """Create a backend by registry name ('torch', 'onnxruntime', 'tensorrt')."""
    from rsd_deploy.errors import BackendUnavailableError

    if name not in _REGISTRY:
        # import lazily so optional runtimes register themselves only when asked for
        import importlib

        module = {"torch": "torch_backend", "onnxruntime": "ort_backend", "tensorrt": "trt_backend"}.get(name)
        if module is not None:
            try:
                importlib.import_module(f"rsd_deploy.backends.{module}")
            except ModuleNotFoundError as e:
                extra = {"onnxruntime": "onnx", "tensorrt": "trt"}.get(name, "dev")
                raise BackendUnavailableError(f"the {name} backend needs the missing package {e.name!r}; "
                                              f"install it with pip install rsd-deploy[{extra}]") from None
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of torch, onnxruntime, tensorrt")
    return _REGISTRY[name](**options)
