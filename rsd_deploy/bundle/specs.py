"""One export spec per submodel: the single source for ONNX export, engine profiles, parity checks,
the manifest and every runtime that feeds the graphs.

Every graph input and output has a **role** (what it means: ``Role``) besides its name in the graph.
Runtimes (the Python backends, the C++ runner, the Triton writer) bind tensors by role and read the
names from here or from the manifest's copy of the spec, so no graph I/O name is written anywhere
else. The denoiser takes the prior sample z_t (= z_y + kappa sqrt(eta_T) eps, drawn on the host by
the sampler), not z_y and the noise separately: every runtime feeds what ``Backend.denoise`` gets.

All spatial sizes in a spec are **latent** pixels (the VQ-f4 latent is 1/4 of the SR image, which
equals the LR image size). Image tensors are ``scale`` times larger. Layout is always NCHW.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar

import numpy as np

from rsd_deploy.errors import ConfigError, ShapeError

Shape3 = Tuple[int, int, int]  # (batch, latent_h, latent_w)

SUBMODELS = ("encoder", "denoiser", "decoder")
V = TypeVar("V")


class Role:
    """What a graph tensor means; the contract between the graphs and every runtime."""

    LR_UPSAMPLED = "lr_upsampled"  # encoder input: bicubic-x4 LR image in [-1, 1]
    LATENT = "latent"  # encoder output: continuous VQ latent z_y
    Z_T = "z_t"  # denoiser input: unscaled prior sample z_T = z_y + kappa sqrt(eta_T) eps
    LQ = "lq"  # denoiser input: LR image in [-1, 1] at latent size
    STUDENT_NOISE = "student_noise"  # denoiser input of RSD students: their extra noise map
    X0 = "x0"  # denoiser output and decoder input: the predicted clean latent
    SR_IMAGE = "sr_image"  # decoder output: SR image in about [-1, 1], not clamped


ROLES = (Role.LR_UPSAMPLED, Role.LATENT, Role.Z_T, Role.LQ, Role.STUDENT_NOISE, Role.X0, Role.SR_IMAGE)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: NCHW, ``channels`` fixed, batch/H/W dynamic."""

    name: str
    role: str  # one of ROLES
    channels: int
    scale: int = 1  # spatial size = scale * latent size (4 for SR-size images)
    dtype: str = "float32"
    description: str = ""

    def shape(self, batch: int, h: int, w: int) -> Tuple[int, int, int, int]:
        return (batch, self.channels, self.scale * h, self.scale * w)


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max (batch, latent_h, latent_w); each H and W must be a multiple of the spec's multiple."""

    min: Shape3
    opt: Shape3
    max: Shape3

    def __iter__(self) -> Iterator[Shape3]:
        return iter((self.min, self.opt, self.max))


@dataclass(frozen=True)
class ExportSpec:
    """What a submodel graph looks like and how precisely it must match PyTorch."""

    name: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    multiple: int  # latent H and W must be multiples of this
    profile: ShapeProfile
    atol_fp32: float  # max abs error ORT fp32 vs PyTorch fp32 (reduction order only)
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def by_role(self, role: str) -> TensorSpec:
        """The input or output tensor with ``role`` (ShapeError naming the graph's roles if none)."""
        for t in self.inputs + self.outputs:
            if t.role == role:
                return t
        raise ShapeError(f"{self.name} graph has no tensor with role {role!r} (it has "
                         f"{', '.join(t.role for t in self.inputs + self.outputs)}); re-export the bundle")

    def name_of(self, role: str) -> str:
        """The graph I/O name of the tensor with ``role``."""
        return self.by_role(role).name

    def feeds(self, values: Mapping[str, Optional[V]]) -> Dict[str, V]:
        """{role: value} -> {input name: value} in the graph's input order.

        A None value stands for a role the graph may lack (the student noise of a non-RSD model)."""
        roles = {t.role for t in self.inputs}
        extra = [r for r, v in values.items() if v is not None and r not in roles]
        missing = [t.role for t in self.inputs if values.get(t.role) is None]
        if extra or missing:
            raise ShapeError(f"{self.name} graph inputs are {', '.join(t.role for t in self.inputs)}; "
                             + (f"got {', '.join(extra)} it does not take" if extra else "")
                             + ("; " if extra and missing else "")
                             + (f"missing {', '.join(missing)}" if missing else "")
                             + " (an RSD student needs student_noise, other models must not get it)")
        return {t.name: values[t.role] for t in self.inputs}  # type: ignore[misc]

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        """Names of the dynamic axes of every I/O tensor (batch, height, width)."""
        axes: Dict[str, Dict[int, str]] = {}
        for t in self.inputs + self.outputs:
            suffix = "" if t.scale == 1 else f"_x{t.scale}"
            axes[t.name] = {0: "batch", 2: "height" + suffix, 3: "width" + suffix}
        return axes

    def check_latent_size(self, h: int, w: int) -> None:
        if h <= 0 or w <= 0 or h % self.multiple or w % self.multiple:
            raise ShapeError(
                f"{self.name}: latent size {h}x{w} is not a positive multiple of {self.multiple}; "
                f"pad the input to a multiple of {self.multiple} latent pixels"
            )

    def input_shapes(self, batch: int, h: int, w: int) -> Dict[str, Tuple[int, int, int, int]]:
        self.check_latent_size(h, w)
        return {t.name: t.shape(batch, h, w) for t in self.inputs}

    def output_shapes(self, batch: int, h: int, w: int) -> Dict[str, Tuple[int, int, int, int]]:
        self.check_latent_size(h, w)
        return {t.name: t.shape(batch, h, w) for t in self.outputs}

    def trt_profile(self, profile: Optional[ShapeProfile] = None) -> Dict[str, Tuple[tuple, tuple, tuple]]:
        """{input name: (min, opt, max) full NCHW shapes} for a TensorRT optimisation profile."""
        p = profile or self.profile
        for (_, h, w) in p:
            self.check_latent_size(h, w)
        return {t.name: tuple(t.shape(*s) for s in p) for t in self.inputs}  # type: ignore[misc]

    def dummy_inputs(self, batch: int, h: int, w: int, seed: int = 0) -> Dict[str, np.ndarray]:
        """Random inputs with the right shapes and plausible ranges (images and lq in [-1, 1])."""
        rng = np.random.default_rng(seed)
        out: Dict[str, np.ndarray] = {}
        for t, shape in zip(self.inputs, self.input_shapes(batch, h, w).values()):
            if t.role in (Role.LR_UPSAMPLED, Role.LQ):
                out[t.name] = rng.uniform(-1.0, 1.0, size=shape).astype(t.dtype)
            else:
                out[t.name] = rng.standard_normal(size=shape).astype(t.dtype)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dynamic_axes"] = {k: {str(a): n for a, n in v.items()} for k, v in self.dynamic_axes().items()}
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ExportSpec":
        """Rebuild a spec from its ``to_dict()`` form (the manifest's ``graphs.*.spec``)."""

        def tensors(items: List[Dict[str, Any]]) -> Tuple[TensorSpec, ...]:
            return tuple(TensorSpec(name=t["name"], role=t["role"], channels=t["channels"], scale=t.get("scale", 1),
                                    dtype=t.get("dtype", "float32"), description=t.get("description", ""))
                         for t in items)

        p = d["profile"]
        return cls(
            name=d["name"], inputs=tensors(d["inputs"]), outputs=tensors(d["outputs"]), multiple=d["multiple"],
            profile=ShapeProfile(min=tuple(p["min"]), opt=tuple(p["opt"]), max=tuple(p["max"])),  # type: ignore[arg-type]
            atol_fp32=d["atol_fp32"], notes=tuple(d.get("notes", ())),
        )


def default_profile(multiple: int) -> ShapeProfile:
    """Tiles of 1-4 multiples per side, batch 1-4; opt = one 64-latent tile (SR 256) when it fits."""
    opt = max(multiple, 64 if 64 % multiple == 0 else multiple)
    return ShapeProfile(min=(1, multiple, multiple), opt=(1, opt, opt), max=(4, 4 * opt, 4 * opt))


def encoder_spec(multiple: int, profile: Optional[ShapeProfile] = None) -> ExportSpec:
    return ExportSpec(
        name="encoder",
        inputs=(TensorSpec("image", Role.LR_UPSAMPLED, 3, scale=4, description="bicubic-x4 LR image in [-1, 1], RGB"),),
        outputs=(TensorSpec("latent", Role.LATENT, 3, description="continuous VQ-f4 latent z_y (not quantised)"),),
        multiple=multiple,
        profile=profile or default_profile(multiple),
        atol_fp32=1e-4,
    )


def denoiser_spec(multiple: int, noise_channels: int = 0, profile: Optional[ShapeProfile] = None) -> ExportSpec:
    inputs = [
        TensorSpec("z_t", Role.Z_T, 3, description="unscaled prior sample z_T = z_y + kappa*sqrt(eta_T)*eps, "
                                                   "eps ~ N(0, I), formed on the host"),
        TensorSpec("lq", Role.LQ, 3, description="LR image in [-1, 1] at latent size"),
    ]
    if noise_channels:
        inputs.append(TensorSpec("noise", Role.STUDENT_NOISE, noise_channels, description="RSD student noise map N(0, I)"))
    return ExportSpec(
        name="denoiser",
        inputs=tuple(inputs),
        outputs=(TensorSpec("x0", Role.X0, 3, description="predicted clean latent"),),
        multiple=multiple,
        profile=profile or default_profile(multiple),
        atol_fp32=1e-4,
        notes=("timestep T-1 and input scaling 1/sqrt(kappa^2 eta_T + 1) are folded into the graph",),
    )


def decoder_spec(multiple: int, profile: Optional[ShapeProfile] = None) -> ExportSpec:
    return ExportSpec(
        name="decoder",
        inputs=(TensorSpec("latent", Role.X0, 3, description="latent to quantise and decode"),),
        outputs=(TensorSpec("image", Role.SR_IMAGE, 3, scale=4, description="SR image in about [-1, 1], not clamped"),),
        multiple=multiple,
        profile=profile or default_profile(multiple),
        # fp32 argmin near-ties can pick another code: compared on codes away from ties
        atol_fp32=1e-3,
    )


def graph_specs(multiple: int, noise_channels: int = 0, profile: Optional[ShapeProfile] = None) -> Dict[str, ExportSpec]:
    """The three specs of one model. All graphs share the UNet's latent multiple so one tile size
    (and one engine profile) serves the whole pipeline."""
    return {
        "encoder": encoder_spec(multiple, profile),
        "denoiser": denoiser_spec(multiple, noise_channels, profile),
        "decoder": decoder_spec(multiple, profile),
    }


# ------------------------------------------------------------------ per-precision tolerances
@dataclass(frozen=True)
class PrecisionTolerance:
    """How close a runtime's graphs at one precision must stay to the fp32 reference (the one table).

    ``min_psnr_db``: the worst crop's end-to-end SR image (8-bit, as rsd-upscale writes it) vs the fp32
    reference chain. ``mean_atol``: per graph, mean |error| of its output on the reference's inputs.
    fp32 graphs are in addition held to their spec's max-abs ``atol_fp32`` against PyTorch at export.
    """

    precision: str
    min_psnr_db: float
    mean_atol: float
    reason: str


TOLERANCES: Dict[str, PrecisionTolerance] = {t.precision: t for t in (
    PrecisionTolerance("fp32", 45.0, 1e-3,
                       "same arithmetic, only the kernels' reduction order differs (ONNX Runtime CPU vs PyTorch, "
                       "TensorRT with TF32 off); a rare VQ code flip at a codebook near-tie still rewrites a 4x4 "
                       "SR patch, so the floor leaves room for a few flips, not for a wrong graph"),
    PrecisionTolerance("fp16", 40.0, 1e-2,
                       "10-bit mantissa (relative rounding 2^-11) in weights and activations; the error enters "
                       "z_y and x0 and can flip VQ codes near ties (the codebook argmin itself stays fp32)"),
    PrecisionTolerance("bf16", 35.0, 2e-2,
                       "7-bit mantissa (relative rounding 2^-8, 8x fp16's) with fp32's range: about 18 dB less "
                       "headroom than fp16 for the same graph, hence a lower floor; the argmin stays fp32"),
    PrecisionTolerance("int8", 30.0, 5e-2,
                       "8-bit weights and activations with calibrated scales (hr_photos, never the test sets); "
                       "the graphs feeding the VQ argmin stay fp32 by default, so the decoder's error dominates"),
)}


def tolerance(precision: str) -> PrecisionTolerance:
    """The row of ``precision``; ConfigError naming the known ones otherwise."""
    if precision not in TOLERANCES:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(TOLERANCES)}")
    return TOLERANCES[precision]


def tolerance_summary(precisions: Optional[Tuple[str, ...]] = None) -> str:
    """'fp16 40, int8 30 dB'-style text of the end-to-end floors (CLI help is generated from it)."""
    rows = [TOLERANCES[p] for p in (precisions or TOLERANCES)]
    return ", ".join(f"{t.precision} {t.min_psnr_db:g}" for t in rows) + " dB"
