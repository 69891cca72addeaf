"""``load_checkpoint``: file -> recognised, configured, strictly loaded model in eval mode."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn

from rsd_deploy.checkpoint import detect, keymap
from rsd_deploy.checkpoint.io import metadata_json, read_checkpoint_file, write_safetensors
from rsd_deploy.config import UNetConfig, VQConfig
from rsd_deploy.errors import CheckpointError, KeyMappingError
from rsd_deploy.models.swin import official_shifted_window_mask, relative_position_index
from rsd_deploy.models.unet import UNetSwin
from rsd_deploy.models.vq import VQAutoencoder

log = logging.getLogger(__name__)

META_KIND = "rsd_deploy.kind"
META_CONFIG = "rsd_deploy.config"

Model = Union[UNetSwin, VQAutoencoder]


def build_model(kind: str, config: Union[UNetConfig, VQConfig]) -> Model:
    return UNetSwin(config) if kind == detect.UNET else VQAutoencoder(config)  # type: ignore[arg-type]


def check_official_buffers(model: UNetSwin, buffers: Mapping[str, torch.Tensor], what: str) -> None:
    """Official files carry regenerated buffers: verify they equal what we generate, then drop them."""
    modules = dict(model.named_modules())
    for key, value in buffers.items():
        owner, name = key.rsplit(".", 1)
        if name == "relative_position_index":
            attn = modules.get(owner)
            if attn is None or not hasattr(attn, "window"):
                raise KeyMappingError(f"{what}: unexpected buffer {key}")
            if not torch.equal(value.long(), relative_position_index(attn.window)):
                raise KeyMappingError(f"{what}: {key} differs from the standard Swin relative-position index")
        elif name == "attn_mask":
            block = modules.get(owner)
            if block is None or not getattr(block, "shift", 0):
                raise KeyMappingError(f"{what}: {key} belongs to no shifted Swin block of this architecture")
            n_side = int(round(value.shape[0] ** 0.5)) * block.window
            expected = official_shifted_window_mask(n_side, n_side, block.window, block.shift)
            if tuple(value.shape) != tuple(expected.shape) or not torch.equal(value.float(), expected):
                raise KeyMappingError(f"{what}: {key} is not the official shifted-window mask of this block")


def state_dict_to_model(state: Mapping[str, torch.Tensor], config: Optional[Union[UNetConfig, VQConfig]] = None,
                        what: str = "state dict") -> Model:
    """Build the model a state dict describes (config inferred from shapes unless given) and load it strictly."""
    state = keymap.strip_prefixes(state)
    kind = detect.detect_kind(state)
    buffers: Dict[str, torch.Tensor] = {}
    if kind == detect.UNET:
        state, buffers = keymap.split_official_buffers(state)
        try:
            config = config or detect.infer_unet_config(state, buffers)
        except (KeyError, ValueError, IndexError) as e:
            raise KeyMappingError(f"{what}: UNet keys are incomplete or inconsistent ({e})") from None
    else:
        try:
            config = config or detect.infer_vq_config(state)
        except (KeyError, ValueError, IndexError) as e:
            raise KeyMappingError(f"{what}: VQ autoencoder keys are incomplete or inconsistent ({e})") from None
    with torch.device("meta"):
        model = build_model(kind, config)
    keymap.match_state_dict(model.state_dict(), state, what)
    keymap.check_dtypes(model.state_dict(), state, what)
    keymap.check_finite(state, what)
    if isinstance(model, UNetSwin):
        check_official_buffers(model, buffers, what)
    model = build_model(kind, config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model.eval()


def load_checkpoint(path: Union[str, os.PathLike]) -> Model:
    """Load an official (ResShift v1/v2/v3, SinSR, RSD ``ema_model_2800.pth``, ``autoencoder_vq_f4.pth``) or
    rsd-deploy checkpoint: ``.pth``/``.ckpt``/``.safetensors``, read with ``weights_only=True``.

    Returns ``UNetSwin`` or ``VQAutoencoder`` in eval mode (float32, CPU) with ``.config`` and
    ``.checkpoint_info`` (path, wrapper keys, kind description, file metadata).
    """
    p = Path(path)
    obj, metadata = read_checkpoint_file(p)
    try:
        state, wrappers = keymap.unwrap(obj)
    except CheckpointError as e:
        raise CheckpointError(f"{p}: {e}") from None
    config = None
    stored = metadata_json(metadata, META_CONFIG)
    if stored is not None:
        cls = UNetConfig if metadata.get(META_KIND) == detect.UNET else VQConfig
        config = cls.from_dict(stored)
    try:
        model = state_dict_to_model(state, config, what=str(p))
    except CheckpointError as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
    kind = detect.UNET if isinstance(model, UNetSwin) else detect.VQ
    info = detect.describe(kind, model.config, sum(t.numel() for t in model.parameters()))
    info.update(path=str(p), wrappers=wrappers, metadata={k: v for k, v in metadata.items() if k != META_CONFIG})
    model.checkpoint_info = info  # type: ignore[assignment]
    log.info("loaded %s from %s (%s parameters)", info["role"], p, f"{info['parameters']:,}")
    return model


def save_safetensors(model: nn.Module, path: Union[str, os.PathLike],
                     metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Save a UNetSwin / VQAutoencoder so that ``load_checkpoint`` rebuilds it exactly (config in the metadata)."""
    if not isinstance(model, (UNetSwin, VQAutoencoder)):
        raise TypeError("save_safetensors takes a UNetSwin or VQAutoencoder")
    kind = detect.UNET if isinstance(model, UNetSwin) else detect.VQ
    meta = {META_KIND: kind, META_CONFIG: json.dumps(model.config.to_dict())}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    return write_safetensors(model.state_dict(), path, meta)


def to_official_state_dict(model: UNetSwin) -> Dict[str, torch.Tensor]:
    """Our UNet's weights plus the buffers upstream's loader requires (for use with the official code)."""
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        out[name] = tensor
    for name, module in model.named_modules():
        if hasattr(module, "relative_position_bias_table"):
            out[f"{name}.relative_position_index"] = relative_position_index(module.window)
        if getattr(module, "shift", 0):
            res = _construction_resolution(model.config, name)
            out[f"{name}.attn_mask"] = official_shifted_window_mask(res, res, module.window, module.shift)
    return out


def _construction_resolution(config: UNetConfig, block_name: str) -> int:
    """Construction-time map size of the Swin block ``block_name`` (used for its stored mask buffer)."""
    stage, index = block_name.split(".")[0], int(block_name.split(".")[1])
    ds = 1
    if stage == "input_blocks":
        i = 0
        for level in range(config.levels):
            i += config.num_res_blocks[level]
            if index <= i:
                break
            i += 1  # the downsample
            ds *= 2
    elif stage == "output_blocks":
        ds = 2 ** (config.levels - 1)
        i = -1
        for level in reversed(range(config.levels)):
            i += config.num_res_blocks[level] + 1
            if index <= i:
                break
            ds //= 2
    return config.image_size // ds


