"""Training configuration: nested dataclasses read from YAML, with ``key=value`` overrides.

Every choice the published sources leave open (DISTILLATION.md 1.6, tagged [ours]) is a named
field here with its default, so a run's saved config records it.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, get_type_hints

import yaml

from rsd_deploy.errors import ConfigError, RSDError
from rsd_deploy.train.degradation import DegradationConfig

__all__ = ["ConfigError", "TrainConfig", "load_config", "PATH_KEYS", "MAX_GT_SIZE"]

# keys whose values are files or folders: read from a config file they resolve against the file's folder
PATH_KEYS = ("teacher", "vq", "data.hr_dirs", "data.hr_split", "data.lq_dir", "data.gt_dir", "val.lq_dir", "val.gt_dir",
             "lpips.weights")
MAX_GT_SIZE = 2048  # HR crop side ceiling: 8x the official 256; a batch of 8 such crops already needs ~40 GB


class Method(str, enum.Enum):
    RSD = "rsd"
    SINSR = "sinsr"
    TEACHER = "teacher"  # plain ResShift x0-MSE training
    VQ = "vq"  # the VQ-f4 autoencoder itself (the other methods take it frozen)


@dataclass
class DataConfig:
    """Training data: ``hr_dirs`` (degraded on the fly) or ``lq_dir`` + ``gt_dir`` (paired)."""

    hr_dirs: List[str] = field(default_factory=list)
    hr_split: Optional[str] = None  # JSON {"train": [names], "val": [names]}: train on the "train" names only
    lq_dir: Optional[str] = None
    gt_dir: Optional[str] = None
    gt_size: int = 256  # HR crop side (official: 256)
    rescale_gt: bool = True  # official: random square of side min(h, w) resized to gt_size (area); False: native crop
    # [ours] with rescale_gt False: a square of side gt_size / s, s ~ U(lo, hi), area-resized to gt_size
    # (1 = native pixels; smaller s = denser detail, as in downscaled photos such as ImageNet's)
    zoom_range: Tuple[float, float] = (1.0, 1.0)
    scale: int = 4
    hflip: bool = True
    workers: int = 0  # DataLoader worker processes per rank (persistent across epochs)
    length: Optional[int] = None  # samples per epoch for HR folders, drawn from the whole set (default: one per image)
    cache_mb: int = 0  # decoded-image cache per worker process, as uint8 (0 = off)
    queue_size: int = 0  # training-pair pool (Real-ESRGAN / ResShift: 10 x micro-batch); 0 = off
    degradation: DegradationConfig = field(default_factory=DegradationConfig)


@dataclass
class ValConfig:
    lq_dir: Optional[str] = None
    gt_dir: Optional[str] = None
    every: int = 1000
    max_images: int = 32
    batch_size: int = 8
    seed: int = 12345


@dataclass
class OptimConfig:
    iterations: int = 3000  # generator (student) iterations
    batch_size: int = 64  # global effective batch per optimiser step (all ranks, all micro-batches)
    micro_batch: int = 8  # per forward/backward
    lr: float = 5e-5
    betas: Tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup: int = 0  # linear LR warm-up iterations (SinSR: 5000)
    lr_decay: str = "constant"  # constant (the official runs) | cosine: to lr_final x lr at optim.iterations
    lr_final: float = 0.1
    grad_clip: Optional[float] = None
    ema: float = 0.999
    precision: str = "fp32"  # autocast for the trained nets: fp32 | bf16 | auto (bf16 where native, else fp32;
    # fp16 would need loss scaling)
    channels_last: bool = False  # NHWC weights and activations (fast bf16 convolutions on CPUs and GPUs)
    vq_fp16: bool = True  # run the frozen VQ in fp16 on CUDA (ignored on CPU)


@dataclass
class RSDConfig:
    fake_updates: int = 5  # K fake-model steps per student step
    student_nodes: List[int] = field(default_factory=lambda: [14, 10, 6, 2])  # [ours] N = 4 nodes
    true_data: bool = True  # student inputs z_{t_n} from noised real latents (multistep_x_true)
    generator_loss: str = "dmd"  # [ours] "dmd" surrogate (ii) or "exact" form (i) of DISTILLATION 1.6
    sid_normalization: bool = True
    t_power_ten_weight: bool = False  # normalize_generator_loss_by_t_power_ten (off in RSD.yaml)
    t_min: int = 0  # [ours] t for teacher/fake evaluation ~ U{t_min..T-1}, w_t = 1
    lpips_weight: float = 2.0
    gan_weight: float = 3e-3
    mse_weight: float = 0.0  # optional latent MSE to the GT (off in RSD.yaml)
    disc_channels: int = 64  # [ours] conv head on the fake UNet bottleneck, non-saturating loss
    lpips_input: str = "node"  # [ours] LPIPS on the node sample x0_hat ("node") or on a one-step output from z_T ("prior")
    loss_reduction: str = "mean"  # [ours] generator loss per sample: mean or sum over C, H, W


@dataclass
class SinSRConfig:
    distill_weight: float = 1.0
    inverse_weight: float = 1.0  # learn_xT
    gt_weight: float = 1.0  # finetune_use_gt


@dataclass
class VQTrainConfig:
    """method vq: a VQ-f4 autoencoder trained continuous first, then quantised (all [ours])."""

    model: Dict[str, Any] = field(default_factory=dict)  # VQConfig fields over the official ones
    init: str = "random"  # random (PyTorch's) | pooling: start as 4x4 average pooling + nearest upsampling
    quantize_from: int = 0  # iteration where the codebook is fitted (k-means) and quantised training starts
    latent_noise: float = 0.03  # N(0, s^2) added to the latent at the decoder while continuous
    guide_weight: Tuple[float, float] = (1.0, 0.05)  # L1 pull of the latent to the 4x4-pooled image: start, end
    gradient_weight: float = 0.5  # L1 on image gradients (edges and fine detail), beside the pixel L1
    lr_share: float = 0.25  # share of each batch that is bicubic-upsampled LR (what z_y encodes)
    kmeans_batches: int = 24  # batches of latents the codebook is fitted on
    kmeans_iters: int = 12
    commitment: float = 0.25  # beta of ||z - sg(z_q)||^2
    codebook_decay: float = 0.99  # EMA codebook updates (no codebook gradient)
    dead_after: int = 50  # a code unused for this many iterations restarts at a random current latent
    lpips_weight: float = 0.1  # used only when lpips.weights names a local file
    # decoder fine-tuning: the encoder and codebook of `vq:` stay frozen, so the latents (and every UNet
    # trained on them) stay valid; only post_quant_conv and the decoder train, on quantised latents
    frozen_latents: bool = False
    # adversarial decoder term: a PatchGAN discriminator (hinge loss), its generator term weighted by
    # adversarial_weight x VQGAN's adaptive balance against the reconstruction loss; 0 = off
    adversarial_weight: float = 0.0
    adversarial_from: int = 0  # iteration the discriminator starts training and the term joins the loss
    disc_channels: int = 32  # first layer's width, doubling per strided layer
    disc_layers: int = 3  # strided 4x4 convs: 3 give each logit a 54 px receptive field


@dataclass
class LPIPSConfig:
    net: str = "alex"  # alex (pyiqa's lpips, the official RSD loss) | vgg
    weights: Optional[str] = None  # local LPIPS file for that backbone; never downloaded at run time
    required: bool = True  # False: run continues without the LPIPS loss when weights are missing


@dataclass
class LogConfig:
    every: int = 10
    checkpoint_every: int = 500
    sample_every: int = 500
    tensorboard: bool = True
    keep_checkpoints: int = 2


@dataclass
class TrainConfig:
    method: Method = Method.RSD
    output_dir: str = "runs/rsd"
    seed: int = 123456
    device: str = "auto"  # auto | cpu | cuda
    teacher: Optional[str] = None  # checkpoint path, or "default" for the embedded demo teacher
    vq: Optional[str] = None  # checkpoint path, or "default"
    schedule: str = "v1"
    unet: Optional[Dict[str, Any]] = None  # method=teacher without `teacher`: UNetConfig fields ("tiny"/"full" allowed)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    rsd: RSDConfig = field(default_factory=RSDConfig)
    vq_train: VQTrainConfig = field(default_factory=VQTrainConfig)
    sinsr: SinSRConfig = field(default_factory=SinSRConfig)
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self, world_size: int = 1) -> None:
        """Raise a one-line :class:`ConfigError` (naming the config file when there is one)."""
        try:
            self._validate(world_size)
        except ConfigError as exc:
            source = getattr(self, "source", None)
            if source and not str(exc).startswith(source):
                raise ConfigError(f"{source}: {exc}") from None
            raise

    def _validate(self, world_size: int) -> None:
        if self.method in (Method.RSD, Method.SINSR) and not self.teacher:
            raise ConfigError(f"method {self.method.value} needs `teacher:` (a ResShift checkpoint or 'default')")
        if self.method == Method.TEACHER and not self.teacher and not self.unet:
            raise ConfigError("method teacher needs `unet:` (architecture) or `teacher:` (initial weights)")
        if not self.vq and self.method != Method.VQ:
            raise ConfigError("set `vq:` to the VQ-f4 autoencoder checkpoint (or 'default')")
        v = self.vq_train
        if self.method == Method.VQ and not 0 <= v.quantize_from < self.optim.iterations:
            raise ConfigError(f"vq_train.quantize_from must be in 0 .. optim.iterations - 1, got {v.quantize_from}")
        if self.method == Method.VQ and v.frozen_latents and not self.vq:
            raise ConfigError("vq_train.frozen_latents fine-tunes the decoder of a trained autoencoder; set `vq:` to it")
        if v.adversarial_weight < 0 or v.adversarial_from < 0 or v.disc_channels < 1 or v.disc_layers < 1:
            raise ConfigError("vq_train.adversarial_weight and adversarial_from must be >= 0 and disc_channels, "
                              f"disc_layers >= 1; got {v.adversarial_weight}, {v.adversarial_from}, "
                              f"{v.disc_channels}, {v.disc_layers}")
        if v.init not in ("random", "pooling"):
            raise ConfigError(f"vq_train.init must be random or pooling, got {v.init!r}")
        if not 0 <= v.lr_share < 1:
            raise ConfigError(f"vq_train.lr_share must be in [0, 1), got {v.lr_share}")
        if not self.data.hr_dirs and not (self.data.lq_dir and self.data.gt_dir):
            raise ConfigError("set data.hr_dirs (HR folders) or data.lq_dir + data.gt_dir (paired folders)")
        o = self.optim
        for key, value, low in (("optim.iterations", o.iterations, 1), ("optim.batch_size", o.batch_size, 1),
                                ("optim.micro_batch", o.micro_batch, 1), ("data.scale", self.data.scale, 1),
                                ("data.gt_size", self.data.gt_size, 16), ("data.workers", self.data.workers, 0),
                                ("data.cache_mb", self.data.cache_mb, 0), ("data.queue_size", self.data.queue_size, 0),
                                ("log.every", self.log.every, 1), ("log.keep_checkpoints", self.log.keep_checkpoints, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{key} must be a whole number >= {low}, got {value!r}")
        if self.data.length is not None and (not isinstance(self.data.length, int) or self.data.length < 1):
            raise ConfigError(f"data.length must be a whole number >= 1 (or unset), got {self.data.length!r}")
        if self.data.gt_size > MAX_GT_SIZE:
            raise ConfigError(f"data.gt_size {self.data.gt_size} is above the {MAX_GT_SIZE} px limit; the official "
                              "value is 256 (set data.gt_size=256)")
        if not o.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {o.lr!r}")
        per_step = o.micro_batch * world_size
        if o.batch_size % per_step:
            raise ConfigError(f"optim.batch_size {o.batch_size} must be a multiple of micro_batch x processes "
                              f"= {o.micro_batch} x {world_size}")
        if o.lr_decay not in ("constant", "cosine"):
            raise ConfigError(f"optim.lr_decay must be constant or cosine, got {o.lr_decay!r}")
        lo, hi = self.data.zoom_range
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"data.zoom_range must be two numbers 0 < lo <= hi <= 1, got {self.data.zoom_range}")
        if o.precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"optim.precision must be fp32, bf16 or auto (bf16 autocast needs no loss scaling), "
                              f"got {o.precision!r}")
        if self.rsd.generator_loss not in ("dmd", "exact"):
            raise ConfigError(f"rsd.generator_loss must be 'dmd' or 'exact', got {self.rsd.generator_loss!r}")
        if self.rsd.lpips_input not in ("node", "prior"):
            raise ConfigError(f"rsd.lpips_input must be 'node' or 'prior', got {self.rsd.lpips_input!r}")
        if self.rsd.loss_reduction not in ("mean", "sum"):
            raise ConfigError(f"rsd.loss_reduction must be 'mean' or 'sum', got {self.rsd.loss_reduction!r}")
        if self.lpips.net not in ("alex", "vgg"):
            raise ConfigError(f"lpips.net must be 'alex' or 'vgg', got {self.lpips.net!r}")
        if self.rsd.fake_updates < 1:
            raise ConfigError("rsd.fake_updates must be >= 1")
        if self.data.gt_size % (self.data.scale * 4):
            # the LR crop must be a whole number of latent pixels that the UNet can pad cheaply
            raise ConfigError(f"data.gt_size {self.data.gt_size} must be a multiple of {self.data.scale * 4}")
        try:
            self.data.degradation.validate()
        except RSDError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimiser step on each process (set by :meth:`validate`'s world size)."""
        return self.optim.batch_size // self.optim.micro_batch

    def to_dict(self) -> Dict[str, Any]:
        return _to_plain(self)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


T = TypeVar("T")


def _coerce(kind: type, value: Any, key: str) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a {kind.__name__}, got {value!r}") from None


def _coerce_to_hint(hint: Any, value: Any, key: str) -> Any:
    """Numbers given as strings (YAML reads ``1e-4`` as text) or ints for floats become the declared type."""
    options = getattr(hint, "__args__", (hint,)) if getattr(hint, "__origin__", None) is not None else (hint,)
    if value is None or isinstance(value, bool):
        return value
    if float in options and isinstance(value, (int, str)):
        return _coerce(float, value, key)
    if int in options and isinstance(value, str):
        return _coerce(int, value, key)
    return value


def _build(cls: Type[T], data: Mapping[str, Any], where: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {where + '.' if where else ''}{unknown[0]}; allowed: {', '.join(sorted(names))}")
    kwargs: Dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, key)  # type: ignore[arg-type]
        elif hint is Method:
            try:
                kwargs[name] = Method(value)
            except ValueError:
                raise ConfigError(f"{key} must be one of {', '.join(m.value for m in Method)}, got {value!r}") from None
        elif getattr(hint, "__origin__", None) is tuple and isinstance(value, list):
            kwargs[name] = tuple(_coerce(float, v, key) if isinstance(v, str) else v for v in value)
        else:
            kwargs[name] = _coerce_to_hint(hint, value, key)
    return cls(**kwargs)  # type: ignore[call-arg]


def apply_override(raw: Dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML) to a raw config dict in place."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value (e.g. optim.lr=1e-4)")
    key, text = override.split("=", 1)
    value = yaml.safe_load(text) if text else None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def _resolve_paths(data: Dict[str, Any], base: Path) -> None:
    """Make the relative paths of :data:`PATH_KEYS` in a loaded config absolute against ``base``."""
    def fix(value: Any) -> Any:
        if not isinstance(value, str) or not value or value == "default" or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    for key in PATH_KEYS:
        node: Any = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or node.get(parts[-1]) is None:
            continue
        value = node[parts[-1]]
        node[parts[-1]] = [fix(v) for v in value] if isinstance(value, list) else fix(value)


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = (),
                raw: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Read a YAML config (or a raw dict), apply ``key=value`` overrides, build the dataclasses.

    Relative paths written in the file (:data:`PATH_KEYS`) resolve against the file's folder, so a
    config runs from any working directory; paths given as overrides (typed in a shell) and
    ``output_dir`` resolve against the current folder.
    """
    data: Dict[str, Any] = dict(raw or {})
    source = None
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass --config train/configs/<name>.yaml")
        try:
            loaded = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"config {path} is not valid YAML ({first})") from None
        except OSError as exc:
            raise ConfigError(f"config {path} cannot be read ({exc.strerror}); check the file") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} holds a YAML {type(loaded).__name__}, not a mapping of keys "
                              "(method:, data:, optim: ...); see train/configs/tiny_rsd.yaml")
        _resolve_paths(loaded, path.resolve().parent)
        data.update(loaded)
    for item in overrides:
        apply_override(data, item)
    try:
        cfg = _build(TrainConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    except TypeError as exc:
        raise ConfigError(f"{source + ': ' if source else ''}bad config value: {exc}") from None
    cfg.source = source  # type: ignore[attr-defined]  # named in validation errors
    return cfg
