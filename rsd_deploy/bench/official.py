"""Time the official ResShift sampler from a checkout the user points at (``rsd-bench --official-repo PATH``).

The official code (github.com/zsyOAOA/ResShift) is under a non-commercial licence: it is imported from
the user's folder at run time and never copied into this project. Its modules are built with the
realsr x4 hyper-parameters from our configs and loaded with the *same* weights as our contender
(``checkpoint.loader.to_official_state_dict``), and fed the same LR image and prior noise, so
"x times the official code" and the PSNR against it are measured in one run.

One-step contenders (SinSR, and RSD's architecture less its noise input, which the official UNet has
no input for) run as SinSR's sampler does: encode, prior, one UNet call at t = T-1 (``p_mean_variance``),
decode. Multi-step contenders run ``p_sample_loop`` (its step noise is drawn inside, so those images
are timing-only). The official code runs in fp32 on the CPU, as a CPU user of it gets.
"""
from __future__ import annotations

import importlib
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

import torch
from torch import nn

from rsd_deploy.errors import BackendUnavailableError, ConfigError

logger = logging.getLogger(__name__)

#: files a ResShift checkout must have (the modules we import)
REQUIRED_FILES = ("models/unet.py", "models/script_util.py", "ldm/models/autoencoder.py")


@contextmanager
def _on_path(repo: Path) -> Iterator[None]:
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(repo))
        except ValueError:  # pragma: no cover
            pass


def check_repo(repo: Path) -> Path:
    repo = Path(repo).expanduser().resolve()
    if not repo.is_dir():
        raise ConfigError(f"--official-repo {repo}: folder not found; pass a checkout of github.com/zsyOAOA/ResShift")
    missing = [f for f in REQUIRED_FILES if not (repo / f).is_file()]
    if missing:
        raise ConfigError(f"--official-repo {repo} is not a ResShift checkout (no {', '.join(missing)}); pass the "
                          f"folder of a clone of github.com/zsyOAOA/ResShift")
    return repo


def import_official(repo: Path) -> dict:
    """{'unet': UNetModelSwin, 'vq': VQModelTorch, 'diffusion': create_gaussian_diffusion} from ``repo``."""
    repo = check_repo(repo)
    with _on_path(repo):
        try:
            unet_mod = importlib.import_module("models.unet")
            script_util = importlib.import_module("models.script_util")
            autoencoder = importlib.import_module("ldm.models.autoencoder")
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in ("models", "ldm"):
                raise ConfigError(f"--official-repo {repo}: cannot import {e.name} from it; pass a ResShift checkout")
            raise BackendUnavailableError(f"the official ResShift code needs the package {e.name!r}, not installed "
                                          f"here: pip install {e.name} (into your environment, not rsd-deploy's "
                                          f"dependencies)") from None
    return {"unet": unet_mod.UNetModelSwin, "vq": autoencoder.VQModelTorch,
            "diffusion": script_util.create_gaussian_diffusion}


@dataclass
class OfficialSampler:
    """The official UNet + VQ + diffusion, built with our weights; ``run`` = one SR image batch."""

    unet: nn.Module
    vq: nn.Module
    diffusion: Any
    steps: int
    one_step: bool

    @torch.inference_mode()
    def run(self, lq: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """LR (B, 3, h, w) in [-1, 1] + prior noise (B, 3, h, w) -> SR (B, 3, 4h, 4w) clamped to [-1, 1]."""
        d = self.diffusion
        if not self.one_step:
            out = d.p_sample_loop(lq, self.unet, first_stage_model=self.vq, noise=prior, clip_denoised=True,
                                  model_kwargs={"lq": lq}, progress=False)
            return out.clamp(-1.0, 1.0)
        z_y = d.encode_first_stage(lq, self.vq, up_sample=True)
        z = d.prior_sample(z_y, prior)
        t = torch.full((lq.shape[0],), self.steps - 1, dtype=torch.long)
        x0 = d.p_mean_variance(self.unet, z, z_y, t, clip_denoised=False, model_kwargs={"lq": lq})["pred_xstart"]
        return d.decode_first_stage(x0, self.vq).clamp(-1.0, 1.0)


def build_official(repo: Path, unet: nn.Module, vq: nn.Module, schedule, one_step: bool) -> OfficialSampler:
    """The official modules with the weights of our ``unet`` (no noise channels) and ``vq``."""
    from rsd_deploy.checkpoint.loader import to_official_state_dict

    cls = import_official(repo)
    uc, vc = unet.config, vq.config
    if int(uc.noise_channels):
        raise ConfigError("the official ResShift UNet has no RSD noise input; time it with a UNet without noise "
                          "channels (the SinSR / ResShift contenders)")
    official_unet = cls["unet"](
        image_size=uc.image_size, in_channels=uc.in_channels, model_channels=uc.model_channels,
        out_channels=uc.out_channels, attention_resolutions=list(uc.attention_resolutions), dropout=0,
        channel_mult=list(uc.channel_mult), num_res_blocks=list(uc.num_res_blocks), conv_resample=True, dims=2,
        use_fp16=False, num_head_channels=uc.num_head_channels, use_scale_shift_norm=True, resblock_updown=False,
        swin_depth=uc.swin_depth, swin_embed_dim=uc.swin_embed_dim, window_size=uc.window_size,
        mlp_ratio=uc.mlp_ratio, cond_lq=True, lq_size=uc.image_size)
    official_unet.load_state_dict(to_official_state_dict(unet), strict=True)
    ddconfig = {"double_z": False, "z_channels": vc.z_channels, "resolution": 256, "in_channels": vc.in_channels,
                "out_ch": vc.out_ch, "ch": vc.ch, "ch_mult": list(vc.ch_mult), "num_res_blocks": vc.num_res_blocks,
                "attn_resolutions": [], "dropout": 0.0, "padding_mode": "zeros"}
    official_vq = cls["vq"](ddconfig=ddconfig, n_embed=vc.n_embed, embed_dim=vc.embed_dim)
    missing, unexpected = official_vq.load_state_dict(vq.state_dict(), strict=False)
    if missing or unexpected:
        raise ConfigError(f"our VQ weights do not fit the official VQModelTorch (missing {list(missing)[:3]}, "
                          f"unexpected {list(unexpected)[:3]}); is the checkout a different ResShift version?")
    diffusion = cls["diffusion"](sf=4, schedule_name="exponential", schedule_kwargs={"power": schedule.power},
                                 etas_end=schedule.etas_end, steps=schedule.T,
                                 min_noise_level=schedule.min_noise_level, kappa=schedule.kappa, weighted_mse=False,
                                 predict_type="xstart", timestep_respacing=None, scale_factor=1.0,
                                 normalize_input=True, latent_flag=True)
    return OfficialSampler(official_unet.eval(), official_vq.eval(), diffusion, int(schedule.T), one_step)


def official_reference_image(sampler: OfficialSampler, lq: torch.Tensor, prior: torch.Tensor) -> Optional[torch.Tensor]:
    """The official image for quality comparison (one-step samplers only: multi-step draw their own noise)."""
    return sampler.run(lq, prior) if sampler.one_step else None



def _noise_free_unet(unet: nn.Module, seed: int) -> nn.Module:
    """The official UNet has no RSD noise input: time RSD's structure less that input (one input channel
    fewer in the first convolution) with seeded random weights of the same configuration."""
    import dataclasses

    from rsd_deploy.models import UNetSwin

    torch.manual_seed(seed)
    return UNetSwin(dataclasses.replace(unet.config, noise_channels=0)).eval()


def official_entries(config, models, contenders, make_entry, timer=None) -> List[dict]:
    """Measure the official sampler for each contender at each size (rsd-bench --official-repo), as
    runner entries (``make_entry``: the runner's entry builder) with backend ``official-fp32``: same LR
    input and prior noise as ``measure_entry``."""
    from rsd_deploy.bench.contenders import BackendVariant, schedule_for
    from rsd_deploy.bench.timer import DeviceTimer, measure

    variant = BackendVariant(key="official-fp32", runtime="official", precision="fp32", device="cpu")
    out: List[dict] = []
    for contender in contenders:
        schedule = schedule_for(contender)
        unet = models.unets[contender.key]
        note = "official ResShift code"
        if int(unet.config.noise_channels):
            unet = _noise_free_unet(unet, config.seed)
            note += ", RSD structure less its noise input (random weights: timing only)"
        sampler = build_official(Path(config.official_repo), unet, models.vq, schedule, contender.one_step)
        for size in config.sizes:
            h, w = size
            lq = torch.rand((config.batch, 3, h, w), generator=torch.Generator().manual_seed(config.seed)) * 2 - 1
            gen = torch.Generator().manual_seed(config.seed)

            def run(rec, lq=lq, gen=gen, h=h, w=w) -> torch.Tensor:
                prior = torch.randn((config.batch, 3, h, w), generator=gen)
                with rec.stage("denoise"):  # one opaque call: the official sampler has no stage hooks
                    return sampler.run(lq, prior)

            try:
                m = measure(run, timer or DeviceTimer("cpu"), warmup=config.warmup, repeats=config.repeats)
            except (RuntimeError, ValueError) as e:  # the official code failing is a skipped row, not a crash
                out.append(make_entry(variant, contender, size, config, status="failed", reason=str(e).splitlines()[0]))
                continue
            data = m.to_dict()
            data["throughput_ips"] = config.batch / (m.total.p50 / 1000.0) if m.total.p50 > 0 else None
            data["timing_only_steps"] = not contender.one_step
            out.append(make_entry(variant, contender, size, config, note=note, **data))
            logger.info("official %s %dx%d: p50 %.0f ms", contender.key, h, w, m.total.p50)
    return out
