"""Pure state-dict transformations: unwrapping, prefix stripping, official buffers, strict matching."""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Tuple

import torch

from rsd_deploy.errors import CheckpointError, KeyMappingError

# nested containers seen in the wild, in the order they are preferred (EMA weights first)
WRAPPER_KEYS = ("params_ema", "ema", "ema_model", "model_ema", "state_dict", "model", "params", "net", "module")
PREFIXES = ("module.", "_orig_mod.")
OFFICIAL_BUFFERS = ("attn_mask", "relative_position_index")


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap(obj: object) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Find the state dict inside a checkpoint object. Returns (state_dict, path of wrapper keys taken)."""
    path: List[str] = []
    for _ in range(4):
        if _is_state_dict(obj):
            return dict(obj), path  # type: ignore[arg-type]
        if not isinstance(obj, Mapping):
            break
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj, path = obj[key], path + [key]
                break
        else:
            # tolerate non-tensor extras (step counters, configs) beside the tensors
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and all(isinstance(k, str) for k in tensors):
                return tensors, path
            break
    raise CheckpointError("no state dict found: expected a mapping of parameter names to tensors, possibly "
                          f"inside one of {list(WRAPPER_KEYS)}")


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Iterable[str] = PREFIXES) -> Dict[str, torch.Tensor]:
    """Remove DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes, in any order and combination."""
    out: Dict[str, torch.Tensor] = {}
    prefixes = tuple(prefixes)
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def split_official_buffers(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Separate the official UNet's regenerated buffers (``attn_mask``, ``relative_position_index``)."""
    params, buffers = {}, {}
    for key, value in state.items():
        (buffers if key.rsplit(".", 1)[-1] in OFFICIAL_BUFFERS else params)[key] = value
    return params, buffers


def match_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise KeyMappingError naming missing, unexpected and shape-mismatched keys (first few of each)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise KeyMappingError(f"{what}: state dict does not fit the architecture: " + "; ".join(problems))


def check_dtypes(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse integer/bool tensors where the model has floating-point ones (load_state_dict would cast them silently)."""
    wrong = [f"{k} {str(given[k].dtype).replace('torch.', '')}" for k in expected
             if k in given and expected[k].is_floating_point() and not given[k].is_floating_point()]
    if wrong:
        shown = ", ".join(wrong[:4]) + (f" (+{len(wrong) - 4} more)" if len(wrong) > 4 else "")
        raise KeyMappingError(f"{what}: {len(wrong)} weight tensor(s) are not floating point ({shown}); "
                              f"this is not a float checkpoint (quantised or damaged?): use the float32/fp16 weights")


def non_finite_tensors(state: Mapping[str, torch.Tensor]) -> List[str]:
    """``"<key> (<n> NaN, <m> Inf)"`` for every floating tensor holding NaN or Inf."""
    found = []
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        finite = torch.isfinite(value)
        if bool(finite.all()):
            continue
        nan = int(torch.isnan(value).sum())
        inf = int(value.numel() - int(finite.sum()) - nan)
        found.append(f"{key} ({', '.join(p for p in (f'{nan} NaN' if nan else '', f'{inf} Inf' if inf else '') if p)})")
    return found


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """NaN/Inf in any weight makes every output NaN (a black image): refuse the file and name the tensors."""
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:4]) + (f" (+{len(bad) - 4} more)" if len(bad) > 4 else "")
        raise CheckpointError(f"{what}: {len(bad)} tensor(s) hold NaN/Inf: {shown}; the weights are corrupt "
                              f"(a diverged training run or a damaged file): use another checkpoint")
