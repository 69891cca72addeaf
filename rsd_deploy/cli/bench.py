"""``rsd-bench``: latency, throughput, memory and quality of RSD vs ResShift v1/v3 and SinSR.

Options (over an optional YAML recipe: ``bench.recipe``) -> ``BenchConfig`` -> ``benchmark_and_report``.
With no arguments: CPU, LR 64, batch 1, full-size architectures with random weights,
PyTorch at --precision auto (bf16 on bf16 CPUs), all four contenders, 1 warm-up + 3 timed runs, results in ``bench-results/``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from rsd_deploy.bench.recipe import config_from_mapping, load_recipe, parse_checkpoints
from rsd_deploy.cli.common import OutputFolder, check_output_folder, reuse_freed_memory, run_command
from rsd_deploy.errors import ConfigError
from rsd_deploy.types import ModelKind

_FIELDS_FROM_OPTIONS = {
    "contender": "contenders", "backend": "backends", "device": "device", "size": "sizes", "batch": "batch",
    "warmup": "warmup", "repeats": "repeats", "arch": "arch", "vq": "vq", "onnx": "onnx_dir",
    "engine": "engine_dir", "tile": "tile", "overlap": "tile_overlap", "quality_lr": "quality_lr",
    "quality_hr": "quality_hr", "quality_limit": "quality_limit", "seed": "seed", "threads": "threads",
    "output": "output", "official_repo": "official_repo",
}


def build_config(ctx: click.Context, params: dict):
    values: dict = {}
    if params.get("recipe"):
        values.update(load_recipe(params["recipe"]))
    for opt, fieldname in _FIELDS_FROM_OPTIONS.items():
        explicit = ctx.get_parameter_source(opt) not in (click.core.ParameterSource.DEFAULT, None)
        if explicit or fieldname not in values:
            v = params[opt]
            if isinstance(v, tuple) and not v:
                continue  # an empty multiple option keeps the recipe's/dataclass's default
            values[fieldname] = v
    if params.get("checkpoint"):
        values["checkpoints"] = parse_checkpoints(params["checkpoint"])
    return config_from_mapping(values)


@click.command(name="rsd-bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--output", default="bench-results", show_default=True, type=OutputFolder(str),
              help="Folder for results.json, results.md, results.png.")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False), help="YAML recipe (benchmarks/recipes/); "
              "options given on the command line override it.")
@click.option("--contender", multiple=True, type=click.Choice(ModelKind.choices()),
              help="Repeatable; default all four.")
@click.option("--backend", multiple=True, help="Repeatable: torch-auto|fp32|bf16|fp16, torch-fast-fp16|bf16 (CUDA graphs), "
              "torch-compile-fp32|bf16|fp16, ort-fp32|fp16|int8, ov-fp32|bf16|int8 (OpenVINO), ort-cuda-*, ort-trt-*, "
              "trt-fp16|int8. <runtime>-auto: the precision --precision auto picks. Default torch-auto (torch-bf16 "
              "on CPUs with AVX512-BF16/AMX, torch-fp16 on CUDA, else torch-fp32).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--size", multiple=True, help="LR size N or HxW (repeatable); default 64.")
@click.option("--batch", default=1, show_default=True, type=int)
@click.option("--warmup", default=1, show_default=True, type=int, help="Untimed runs (the first is the cold call).")
@click.option("--repeats", default=3, show_default=True, type=int, help="Timed runs per measurement.")
@click.option("--arch", default="full", show_default=True, type=click.Choice(["full", "tiny"]),
              help="Architecture with random weights when no checkpoint is given.")
@click.option("--checkpoint", multiple=True, help="CONTENDER=PATH, repeatable (e.g. rsd=ema_model_2800.pth).")
@click.option("--vq", type=click.Path(exists=True, dir_okay=False), help="VQ-f4 autoencoder checkpoint.")
@click.option("--onnx", type=click.Path(file_okay=False), help="Exported graphs (rsd-export folder, or DIR/<contender>/) "
              "to use; graphs missing there are exported into it.")
@click.option("--engine", type=click.Path(exists=True, file_okay=False), help="TensorRT engine folder.")
@click.option("--tile", type=int, help="LR tile size: larger sizes run tiled through the SR pipeline.")
@click.option("--overlap", default=16, show_default=True, type=int, help="Tile overlap in LR pixels.")
@click.option("--quality-lr", type=click.Path(exists=True, file_okay=False), help="LR images for the quality side.")
@click.option("--quality-hr", type=click.Path(exists=True, file_okay=False), help="Matching HR images (optional).")
@click.option("--quality-limit", default=8, show_default=True, type=int, help="At most this many quality images.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 64 - 1))
@click.option("--threads", type=int, help="CPU threads of every runtime (torch, ONNX Runtime, OpenVINO).")
@click.option("--official-repo", type=click.Path(file_okay=False), help="A local checkout of the official ResShift "
              "code (github.com/zsyOAOA/ResShift): its sampler is timed in the same run, on the same weights and "
              "noise (imported from there at run time, never copied; it needs its own packages, e.g. timm).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def cli(ctx: click.Context, **params) -> None:
    """Benchmark RSD against ResShift v1/v3 and SinSR on every available backend.

    Exit codes: docs/CLI.md (2 for a bad option or recipe)."""
    logging.basicConfig(level=logging.INFO if params["verbose"] else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from rsd_deploy.bench import benchmark_and_report

    cfg = build_config(ctx, params)
    if not str(cfg.output).strip():  # a recipe's `output: ""`
        raise ConfigError("output '': an empty path would write into the current folder; pass a folder name")
    check_output_folder(Path(cfg.output), "-o")  # before any model is built or measured
    paths = benchmark_and_report(cfg, progress=not params["no_progress"])
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    import json

    entries = json.loads(paths["json"].read_text())["entries"]
    if entries and not any(e["status"] == "ok" for e in entries):
        from rsd_deploy.errors import BackendUnavailableError

        first = next(e for e in entries if e["status"] != "ok")
        raise BackendUnavailableError(f"nothing could be measured ({first['backend']}: {first['reason']}); "
                                      f"pick available backends, see {paths['md']}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point: one-line errors and exit codes via the shared CLI runner (exits only on failure)."""
    code = run_command(cli, argv)
    if code:
        sys.exit(code)


def console() -> None:
    """The ``rsd-bench`` executable: as rsd-upscale, glibc keeps freed blocks for reuse, so re-allocated
    activations are not page-faulted in again and timed (the first contender paid most of that); set here,
    not in ``main``, so that calling ``main`` in a test leaves the test process's allocator alone."""
    reuse_freed_memory()
    main()


if __name__ == "__main__":  # pragma: no cover
    console()
