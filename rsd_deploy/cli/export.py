"""``rsd-export``: ONNX graphs (FP32, FP16, INT8) of the one-step model, verified against PyTorch.

Options -> ``ExportConfig`` -> ``rsd_deploy.export.exporter.export_models``; ``--build-engine``,
``--verify`` and ``--triton`` call the TensorRT and Triton modules (imported lazily).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import click

from rsd_deploy.bundle.specs import tolerance_summary
from rsd_deploy.cli.common import OutputFolder, check_output_folder, entry_point, setup_logging
from rsd_deploy.errors import ConfigError
from rsd_deploy.export.int8 import INT8_GRAPHS
from rsd_deploy.types import ModelKind

_PATH = click.Path(path_type=Path)
_DIR = click.Path(path_type=Path, file_okay=False)

EXIT_HELP = f"""\b
Exit codes:
  0  done (the ONNX graphs were written and verified; engines not built when TensorRT is
     missing: a line says so and how to build them later, `rsd-export --build-engine OUTDIR`)
  2  bad option or input; 3 checkpoint unreadable; 4 bad shape; 6 export/parity failure
     (an FP32 graph that does not match PyTorch is never kept); 7 a runtime (TensorRT, CUDA)
     needed by --build-engine/--verify is missing; 9 bad manifest
  10 --strict-accuracy and an FP16/INT8 pipeline is below its PSNR threshold
     ({tolerance_summary(("fp16", "int8"))}, worst crop, specs.TOLERANCES)
  all codes (70 unexpected error, 130/143 interrupted/terminated): docs/CLI.md
"""


def parse_shape(text: Optional[str], option: str) -> Optional[Tuple[int, int, int]]:
    """'BxHxW' (latent px) -> (B, H, W); ConfigError with the expected form otherwise."""
    if text is None:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ConfigError(f"{option} {text!r} must look like 1x64x64 (batch x latent height x latent width)")
    return values  # type: ignore[return-value]


#: --strict-accuracy and an FP16/INT8 pipeline below its PSNR threshold (everything was still written)
EXIT_ACCURACY = 10


def _engine_status(out_dir: Path, engines: bool) -> Tuple[bool, str]:
    """(build engines now?, the one line to print when not)."""
    try:
        from rsd_deploy.export.engine_build import rebuild_command, tensorrt_status
    except ImportError:
        return False, (f"TensorRT engines were not built: this install has no engine builder; "
                       f"build them later with `rsd-export --build-engine {out_dir}`")
    if not engines:
        return False, f"TensorRT engines were not built (--no-engines); build them with `{rebuild_command(out_dir)}`"
    ok, reason = tensorrt_status()
    if ok:
        return True, ""
    return False, f"TensorRT engines were not built: {reason}; build them later with `{rebuild_command(out_dir)}`"


def _build_engines(folder: Path, precisions: Sequence[str], shapes) -> None:
    try:
        from rsd_deploy.export.engine_build import EngineBuildOptions, build_engines
    except ImportError as exc:
        raise ConfigError(f"--build-engine: the TensorRT engine builder is not available ({exc})") from exc
    from rsd_deploy.bundle.specs import ShapeProfile

    profile = None
    if any(s is not None for s in shapes):
        if not all(s is not None for s in shapes):
            raise ConfigError("--build-engine with a custom profile needs all of --min-shape, --opt-shape, --max-shape")
        profile = ShapeProfile(*shapes)
    plans = build_engines(folder, precisions, EngineBuildOptions(profile=profile))
    for plan in plans:
        click.echo(f"engine: {plan}")


def _available_precisions(folder: Path) -> Tuple[str, ...]:
    from rsd_deploy.bundle.manifest import load_manifest

    manifest = load_manifest(folder)
    found = set.intersection(*(set(g["variants"]) for g in manifest["graphs"].values()))
    return tuple(p for p in ("fp32", "fp16", "int8") if p in found)


def _verify(folder: Path) -> None:
    from rsd_deploy.export.trt_verify import verify_engines

    click.echo(str(verify_engines(folder)))


def _triton(folder: Path, triton_dir: Path) -> None:
    from rsd_deploy.export.triton import write_model_repository

    repo = write_model_repository(folder, triton_dir)
    click.echo(f"triton model repository: {repo.root}")


@click.command(name="rsd-export", context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_HELP)
@click.option("-o", "--output", "out_dir", type=OutputFolder(), help="Export folder for the graphs, manifest.json and accuracy report.")
@click.option("--checkpoint", type=_PATH, help="UNet / SinSR / RSD student weights. Default: the embedded demo model.")
@click.option("--vq", type=_PATH, help="VQ-f4 autoencoder weights; needed with --checkpoint.")
@click.option("--model", type=click.Choice(ModelKind.choices()), default=None,
              help="Model kind when the weights cannot tell (RSD is detected). ResShift teachers export their last "
                   "step only.")
@click.option("--fp16", is_flag=True, help="Also write FP16 graphs (norms, softmax, VQ lookup kept FP32).")
@click.option("--int8", is_flag=True, help="Also write INT8 Q/DQ graphs (symmetric, calibrated on --calib images).")
@click.option("--int8-graphs", default=",".join(INT8_GRAPHS), show_default=True,
              help="Comma list of graphs to quantise with --int8 (encoder, denoiser, decoder); the others' int8 "
                   "variant is their fp32 graph (the denoiser's int8 error flips VQ codes).")
@click.option("--calib", "calib_dirs", type=_DIR, multiple=True,
              help="Folder of real LR images for INT8 calibration and the accuracy report (repeatable). "
                   "Default: calibration on LR crops made from shared/data/hr_photos (training photos), the "
                   "accuracy report on shared/data/imagenet_val_sr/lq and realset65.")
@click.option("--calib-count", type=click.IntRange(min=1), default=16, show_default=True,
              help="Calibration crops for INT8.")
@click.option("--opset", type=click.Choice(["17", "18"]), default="17", show_default=True)
@click.option("--min-shape", help="Profile minimum BxHxW, latent px (= LR px). Default 1xMxM, M = latent multiple.")
@click.option("--opt-shape", help="Profile optimum BxHxW; also the export and accuracy shape. Default 1x64x64.")
@click.option("--max-shape", help="Profile maximum BxHxW. Default 4x256x256.")
@click.option("--build-engine", "build_dir", type=_DIR,
              help="Build TensorRT engines for the graphs in this export folder (needs TensorRT and a GPU).")
@click.option("--verify", "verify_dir", type=_DIR, help="Compare TensorRT engines in this folder with ONNX Runtime.")
@click.option("--triton", "triton_dir", type=OutputFolder(), help="Write a Triton model repository for the export (-o or "
              "--build-engine folder) into this folder.")
@click.option("--engines/--no-engines", default=True, show_default=True,
              help="After -o export, build TensorRT engines when TensorRT and a CUDA GPU are present.")
@click.option("--strict-accuracy", is_flag=True, help=f"Exit 10 when an FP16/INT8 pipeline misses its PSNR threshold ({tolerance_summary(('fp16', 'int8'))}).")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bar.")
def cli(out_dir: Optional[Path], checkpoint: Optional[Path], vq: Optional[Path], model: Optional[str], fp16: bool,
        int8: bool, int8_graphs: str, calib_dirs: Tuple[Path, ...], calib_count: int, opset: str,
        min_shape: Optional[str], opt_shape: Optional[str], max_shape: Optional[str], build_dir: Optional[Path],
        verify_dir: Optional[Path], triton_dir: Optional[Path], engines: bool, strict_accuracy: bool, verbose: int,
        quiet: bool) -> int:
    """Export the one-step SR model to ONNX (encoder, denoiser, decoder), prove each graph
    against PyTorch on the CPU, and write manifest.json + accuracy.json/md beside the graphs.

    Example: rsd-export --fp16 --int8 -o out/ ; later, on a GPU machine: rsd-export --build-engine out/
    """
    setup_logging(verbose, quiet)
    shapes = (parse_shape(min_shape, "--min-shape"), parse_shape(opt_shape, "--opt-shape"),
              parse_shape(max_shape, "--max-shape"))
    if out_dir is None and build_dir is None and verify_dir is None:
        raise ConfigError("nothing to do: pass -o OUTDIR to export (or --build-engine/--verify DIR)")
    if triton_dir is not None and out_dir is None and build_dir is None:
        raise ConfigError("--triton needs the export folder: pass -o OUTDIR or --build-engine DIR with it")
    # output folders first: a bad -o fails in one line before minutes of model loading and export
    if out_dir is not None:
        check_output_folder(out_dir, "-o")
    if triton_dir is not None:
        check_output_folder(triton_dir, "--triton")
    if (calib_dirs or calib_count != 16) and not int8 and out_dir is not None:
        click.echo("note: --calib images are used for the accuracy report only (INT8 not requested)", err=True)
    exit_code = 0
    if out_dir is not None:
        from rsd_deploy.export.exporter import ExportConfig, export_models

        config = ExportConfig(out_dir=out_dir, checkpoint=checkpoint, vq=vq, model=model, fp16=fp16, int8=int8,
                              int8_graphs=tuple(g.strip() for g in int8_graphs.split(",") if g.strip()),
                              calib_dirs=tuple(calib_dirs), calib_count=calib_count, opset=int(opset),
                              min_shape=shapes[0], opt_shape=shapes[1], max_shape=shapes[2],
                              progress=not quiet)
        result = export_models(config)
        click.echo(f"wrote {result.manifest_path} ({result.kind}; "
                   f"{', '.join(p for p in ('fp32', 'fp16', 'int8') if p in result.files['denoiser'])})")
        for line in result.accuracy.summary_lines():  # type: ignore[attr-defined]
            click.echo(f"accuracy {line}")
        failed = result.failed_precisions()
        if failed:
            click.echo(f"warning: {', '.join(failed)} below the PSNR threshold; see {out_dir / 'accuracy.md'}",
                       err=True)
            if strict_accuracy:
                exit_code = EXIT_ACCURACY
        if build_dir is None:
            build_now, line = _engine_status(out_dir, engines)
            if build_now:  # TensorRT and a GPU are here: ONNX, verification, then engines in one go
                _build_engines(out_dir, _available_precisions(out_dir), shapes)
            else:
                click.echo(line)
    if build_dir is not None:
        _build_engines(build_dir, _available_precisions(build_dir), shapes)
    if verify_dir is not None:
        _verify(verify_dir)
    if triton_dir is not None:
        _triton(out_dir if out_dir is not None else build_dir, triton_dir)  # type: ignore[arg-type]
    return exit_code


main = entry_point(cli)


if __name__ == "__main__":  # pragma: no cover
    main()
