"""Benchmark recipes (bench/recipe.py): the recorded recipes load, values become one validated BenchConfig."""
from __future__ import annotations

from pathlib import Path

import pytest

from rsd_deploy.bench.recipe import config_from_mapping, load_recipe, parse_checkpoints
from rsd_deploy.errors import ConfigError


def test_every_recorded_recipe_is_a_valid_config():
    recipes = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        cfg = config_from_mapping(load_recipe(path))
        assert cfg.sizes and cfg.backends, path.name


def test_values_are_normalised_and_runtimes_follow_their_folders(tmp_path):
    cfg = config_from_mapping({"sizes": [16, "16x32", [8, 24]], "contenders": ["rsd"], "onnx_dir": str(tmp_path)})
    assert cfg.sizes == ((16, 16), (16, 32), (8, 24)) and cfg.contenders == ("rsd",)
    assert cfg.backends == ("torch-auto", "ort-fp32")  # an ONNX folder adds the ONNX Runtime row (default: --precision auto)


def test_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'repeats'"):
        config_from_mapping({"repeat": 2})
    (tmp_path / "r.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(tmp_path / "r.yaml")
    ckpt = tmp_path / "rsd.pth"
    ckpt.write_bytes(b"x")
    assert parse_checkpoints([f"rsd={ckpt}"]) == {"rsd": str(ckpt)}
    with pytest.raises(ConfigError, match="CONTENDER=PATH"):
        parse_checkpoints(["rsd"])
