"""Benchmark settings from a YAML recipe (benchmarks/recipes/) and option values: one validated
``BenchConfig``. The CLI only merges its click options over a recipe and calls this."""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Iterable, Tuple

from rsd_deploy.bench.runner import BenchConfig, parse_size
from rsd_deploy.errors import ConfigError


def load_recipe(path: Path) -> dict:
    """A YAML recipe: a mapping of BenchConfig field names (sizes as [h, w] or N)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"recipe {path}: cannot be read ({str(e).splitlines()[0]}); pass a YAML file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: must be a mapping of settings, not a {type(data).__name__}")
    data.pop("description", None)
    return data


def config_from_mapping(values: dict) -> BenchConfig:
    """BenchConfig from recipe/option values: sizes as N, "HxW" or [h, w]; validated."""
    values = dict(values)
    if "sizes" in values:
        values["sizes"] = tuple(parse_size(str(s)) if not isinstance(s, (list, tuple)) else (int(s[0]), int(s[1]))
                                for s in values["sizes"])
    for key in ("contenders", "backends"):
        if key in values:
            values[key] = tuple(values[key])
    backends = list(values.get("backends", ("torch-auto",)))
    if values.get("onnx_dir") and not any(b.startswith("ort") for b in backends):
        backends.append("ort-fp32")
    if values.get("engine_dir") and not any(b.startswith("trt") for b in backends):
        backends.append("trt-fp16")
    values["backends"] = tuple(backends)
    known = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        close = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hints = ", ".join(f"{k!r}" + (f" (did you mean {close[k][0]!r}?)" if close[k] else "") for k in unknown)
        raise ConfigError(f"unknown setting {hints}; see rsd-bench --help and benchmarks/recipes/")
    try:
        cfg = BenchConfig(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad setting ({e}); see rsd-bench --help and benchmarks/recipes/") from None
    try:
        cfg.validate()
    except TypeError as e:  # a recipe value of the wrong type (batch: "two")
        raise ConfigError(f"bad setting type ({e}); see rsd-bench --help and benchmarks/recipes/") from None
    return cfg


def parse_checkpoints(items: Iterable[str]) -> dict:
    """``CONTENDER=PATH`` strings -> {contender: path} (each file must exist)."""
    return dict(_split_checkpoint(c) for c in items)


def _split_checkpoint(text: str) -> Tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"--checkpoint {text!r}: use CONTENDER=PATH, e.g. rsd=ema_model_2800.pth")
    k, v = text.split("=", 1)
    if not Path(v).is_file():
        raise ConfigError(f"--checkpoint {k}={v}: file not found; check the path")
    return k.strip(), v
