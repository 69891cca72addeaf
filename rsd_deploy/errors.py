"""Typed errors of rsd-deploy. Every message is one line that names the problem and what to do."""


class RSDError(Exception):
    """Base class; the CLIs print ``str(error)`` on one line and exit non-zero."""

    exit_code = 1


class CheckpointError(RSDError):
    """A checkpoint file cannot be read, recognised or loaded."""

    exit_code = 3


class KeyMappingError(CheckpointError):
    """A state dict does not match the architecture (missing, unexpected or mismatched keys)."""


class ShapeError(RSDError):
    """A tensor or image has a shape the model or graph cannot take."""

    exit_code = 4


class ImageIOError(RSDError):
    """An image cannot be read or written."""

    exit_code = 5


class ExportError(RSDError):
    """ONNX export or an ONNX pre-pass (FP16, INT8) failed."""

    exit_code = 6


class AtolError(ExportError):
    """A parity check found outputs outside the stated tolerance."""


class OutputMatchError(ExportError):
    """A parity check found a candidate graph with other output tensors than the reference's."""


class BackendUnavailableError(RSDError):
    """An optional runtime (ONNX Runtime, TensorRT, CUDA) is not installed or has no device."""

    exit_code = 7


class EngineMismatchError(RSDError):
    """A TensorRT engine was built for another TensorRT version, GPU or graph."""

    exit_code = 8


class ConfigError(RSDError):
    """An option or config value is invalid (out of range, inconsistent with another one)."""

    exit_code = 2


class ManifestError(RSDError):
    """An engine bundle's manifest.json is missing, invalid or points at missing/changed files."""

    exit_code = 9


class EnginePrecisionError(ExportError):
    """A TensorRT engine lost the precision its ONNX graph asked for (e.g. an "fp16" engine built in fp32)."""


class NonFiniteOutputError(RSDError):
    """A network produced NaN/Inf for an image (fp16 overflow, or weights that overflow in use)."""

    exit_code = 11
