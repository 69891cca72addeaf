"""What a state dict holds, and the architecture hyperparameters read off its tensor shapes (pure functions)."""
from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Optional

import torch

from rsd_deploy.config import UNetConfig, VQConfig
from rsd_deploy.errors import CheckpointError

UNET = "unet"
VQ = "vq"


def detect_kind(state: Mapping[str, torch.Tensor]) -> str:
    if "input_blocks.0.0.weight" in state and "out.2.weight" in state:
        return UNET
    if "quantize.embedding.weight" in state and "encoder.conv_in.weight" in state:
        return VQ
    sample = ", ".join(list(state)[:3])
    raise CheckpointError(f"not a ResShift/SinSR/RSD UNet nor a VQ autoencoder state dict (first keys: {sample})")


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> List[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state for m in [rx.match(k)] if m})


def infer_unet_config(state: Mapping[str, torch.Tensor], buffers: Optional[Mapping[str, torch.Tensor]] = None) -> UNetConfig:
    """UNetConfig from an official-format UNet state dict (buffers help recover the construction resolution)."""
    buffers = buffers or {}
    w_in = state["input_blocks.0.0.weight"]
    model_channels = int(w_in.shape[0])
    # the latent channel count from the 1-D bias when present, so a damaged out.2.weight is reported as a shape
    # mismatch of out.2.weight (by match_state_dict), not blamed on the first conv
    out_key = "out.2.bias" if "out.2.bias" in state and state["out.2.bias"].ndim == 1 else "out.2.weight"
    if state[out_key].ndim == 0:
        raise CheckpointError(f"{out_key} is a scalar; expected ({'C' if out_key.endswith('bias') else 'C, K, 3, 3'})")
    out_channels = int(state[out_key].shape[0])
    in_channels = out_channels  # latent in, latent out (x0 prediction)
    noise_channels = int(w_in.shape[1]) - 2 * in_channels
    if noise_channels < 0:
        raise CheckpointError(f"{out_key} {tuple(state[out_key].shape)} gives {out_channels} latent channels but the "
                              f"first conv input_blocks.0.0.weight {tuple(w_in.shape)} takes {w_in.shape[1]} "
                              f"(expected [x, lq(, noise)] >= {2 * in_channels}); one of them has the wrong shape")

    # walk the encoder: ResBlocks per level, downsamples between levels, Swin layers after ResBlocks
    blocks = _indices(state, r"input_blocks\.(\d+)\.")
    channel_mult: List[int] = []
    num_res_blocks: List[int] = []
    swin_prefixes: Dict[int, str] = {}  # encoder level -> its Swin layer's key prefix
    count = 0
    for i in blocks[1:]:
        if f"input_blocks.{i}.0.op.weight" in state:
            num_res_blocks.append(count)
            count = 0
            continue
        if count == 0:
            channel_mult.append(int(state[f"input_blocks.{i}.0.in_layers.2.weight"].shape[0]) // model_channels)
            if f"input_blocks.{i}.1.patch_embed.proj.weight" in state:
                swin_prefixes[len(channel_mult) - 1] = f"input_blocks.{i}.1"
        count += 1
    num_res_blocks.append(count)
    levels = len(channel_mult)

    swin_prefix = "middle_block.1"
    embed_dim = int(state[f"{swin_prefix}.patch_embed.proj.weight"].shape[0])
    depth = len(_indices(state, re.escape(swin_prefix) + r"\.blocks\.(\d+)\.norm1\.weight"))
    heads = int(state[f"{swin_prefix}.blocks.0.attn.relative_position_bias_table"].shape[1])
    mlp_ratio = float(state[f"{swin_prefix}.blocks.0.mlp.fc1.weight"].shape[0]) / embed_dim

    def window_of(prefix: str) -> int:
        return (math.isqrt(int(state[f"{prefix}.blocks.0.attn.relative_position_bias_table"].shape[0])) + 1) // 2

    swin_levels = sorted(swin_prefixes)
    window = max([window_of(swin_prefix)] + [window_of(p) for p in swin_prefixes.values()])
    mid_window = window_of(swin_prefix)
    bottom = 2 ** (levels - 1)
    if mid_window < window:  # window clipped at the bottom: construction resolution there == mid_window
        image_size = mid_window * bottom
    else:
        image_size = _image_size_from_masks(buffers, window, swin_prefixes) or 64
    attention_resolutions = tuple(image_size // 2 ** lvl for lvl in swin_levels)
    return UNetConfig(image_size=image_size, in_channels=in_channels, model_channels=model_channels,
                      out_channels=out_channels, num_res_blocks=tuple(num_res_blocks),
                      attention_resolutions=attention_resolutions, channel_mult=tuple(channel_mult),
                      num_head_channels=embed_dim // heads, swin_depth=depth, swin_embed_dim=embed_dim,
                      window_size=window, mlp_ratio=mlp_ratio, noise_channels=noise_channels)


def _image_size_from_masks(buffers: Mapping[str, torch.Tensor], window: int,
                           swin_prefixes: Mapping[int, str]) -> Optional[int]:
    """The official attn_mask buffer of the first shifted encoder layer is (nW, N, N) at construction size."""
    for lvl, prefix in sorted(swin_prefixes.items()):
        key = f"{prefix}.blocks.1.attn_mask"
        if key in buffers:
            n_windows = int(buffers[key].shape[0])
            return math.isqrt(n_windows) * window * 2 ** lvl
    return None


def infer_vq_config(state: Mapping[str, torch.Tensor]) -> VQConfig:
    ch = int(state["encoder.conv_in.weight"].shape[0])
    levels = _indices(state, r"encoder\.down\.(\d+)\.")
    ch_mult = tuple(int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch for i in levels)
    num_res_blocks = len(_indices(state, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight"))
    n_embed, embed_dim = (int(s) for s in state["quantize.embedding.weight"].shape)
    return VQConfig(embed_dim=embed_dim, n_embed=n_embed, z_channels=int(state["encoder.conv_out.weight"].shape[0]),
                    ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                    in_channels=int(state["encoder.conv_in.weight"].shape[1]),
                    out_ch=int(state["decoder.conv_out.weight"].shape[0]))


def describe(kind: str, config: object, n_params: int) -> Dict[str, object]:
    if kind == UNET:
        assert isinstance(config, UNetConfig)
        role = ("RSD student (one step, noise input)" if config.noise_channels
                else "ResShift / SinSR UNet (6-channel input)")
        return {"kind": UNET, "role": role, "parameters": n_params, "config": config.to_dict()}
    return {"kind": VQ, "role": f"VQ-f{2 ** (len(config.ch_mult) - 1)} autoencoder",  # type: ignore[attr-defined]
            "parameters": n_params, "config": config.to_dict()}  # type: ignore[attr-defined]
