"""``rsd-upscale``: x4 super-resolution of image files and folders.

Options -> ``UpscaleConfig`` -> ``rsd_deploy.pipeline.upscale_files`` -> exit code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from rsd_deploy.cli.common import OutputFolder, entry_point, print_error, reuse_freed_memory, setup_logging
from rsd_deploy.pipeline.batch import UpscaleConfig, upscale_files
from rsd_deploy.pipeline.image_io import DEFAULT_MAX_OUTPUT_MEGAPIXELS
from rsd_deploy.pipeline.loading import ONNX_RUNTIMES, ModelSource
from rsd_deploy.types import ModelKind, TileConfig

_PATH = click.Path(path_type=Path)
_DIR = click.Path(path_type=Path, file_okay=False)


@click.command(name="rsd-upscale", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=_PATH)
@click.option("-o", "--output", "output_dir", required=True, type=OutputFolder(),
              help="Output folder (created if missing); each result is <stem>_x4.png.")
@click.option("--checkpoint", type=_PATH, help="UNet / SinSR / RSD student weights (.pth, .ckpt, .safetensors). "
              "Default: the embedded demo model.")
@click.option("--vq", type=_PATH, help="VQ-f4 autoencoder weights (autoencoder_vq_f4.pth); needed with --checkpoint.")
@click.option("--model", type=click.Choice(ModelKind.choices()), default=None,
              help="Sampler for --checkpoint: rsd (detected from the weights), sinsr, resshift-v1 (15 steps), "
                   "resshift-v3 (4 steps).")
@click.option("--onnx", "onnx_dir", type=_DIR, help="Run exported ONNX graphs from this folder (ONNX Runtime, "
              "or OpenVINO with --runtime openvino).")
@click.option("--runtime", type=click.Choice(list(ONNX_RUNTIMES)), default=None,
              help="Runtime for --onnx graphs (default onnxruntime); openvino needs pip install rsd-deploy[openvino].")
@click.option("--engine", "engine_dir", type=_DIR, help="Run TensorRT engines from this folder.")
@click.option("--tile", type=click.IntRange(min=0), default=64, show_default=True,
              help="Tile size in LR pixels (rounded up to the model's multiple); 0 = whole image at once. "
                   "64 is the models' training size; larger tiles cost more per pixel.")
@click.option("--overlap", type=click.IntRange(min=0), default=8, show_default=True,
              help="Feathered overlap between tiles, LR pixels.")
@click.option("--tile-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tiles per network call (more: faster on GPUs, more memory).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Default: cuda when available, else cpu.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16", "int8"]), default="auto",
              show_default=True, help="auto: the fastest precision the device runs natively within the measured "
              "accuracy (bf16 on CPUs with AVX512-BF16/AMX, fp16 on CUDA, else fp32), named in the log. fp32 is the "
              "reference. fp16 needs CUDA; int8 needs --onnx graphs exported with --int8 (or --engine).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--seed", type=click.IntRange(0, 2 ** 64 - 1), default=0, show_default=True,
              help="Noise seed (0 .. 2^64-1); the same seed, device and options give the same output.")
@click.option("--max-output-megapixels", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_MAX_OUTPUT_MEGAPIXELS, show_default=True,
              help="Refuse (before decoding) an input whose x4 output is larger; the output must also fit "
                   "in memory. 1024 = an 8192 x 8192 input.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bar.")
def cli(inputs: Tuple[Path, ...], output_dir: Path, checkpoint: Optional[Path], vq: Optional[Path],
        model: Optional[str], onnx_dir: Optional[Path], engine_dir: Optional[Path], tile: int, overlap: int,
        tile_batch: int, device: Optional[str], precision: str, seed: int, max_output_megapixels: float,
        verbose: int, quiet: bool, runtime: Optional[str] = None, threads: Optional[int] = None) -> int:
    """Super-resolve INPUT images (files or folders) x4 into the -o folder.

    Example: rsd-upscale photos/ -o photos_x4/ --tile-batch 4

    A bad file fails alone (one line), the others are still written. Exit codes: docs/CLI.md.
    """
    setup_logging(verbose, quiet)
    reuse_freed_memory()
    config = UpscaleConfig(
        inputs=tuple(inputs),
        output_dir=output_dir,
        source=ModelSource(checkpoint=checkpoint, vq=vq, model=ModelKind(model) if model else None,
                           onnx_dir=onnx_dir, engine_dir=engine_dir, device=device, precision=precision,
                           runtime=runtime, threads=threads),
        tiling=TileConfig(tile=tile or None, overlap=overlap if tile else 0, batch=tile_batch),
        seed=seed,
        progress=not quiet,
        max_output_megapixels=max_output_megapixels,
    )
    report = upscale_files(config)
    total = len(report.written) + len(report.failures)
    if report.failures:
        names = ", ".join(str(f.path) for f in report.failures)
        print_error(f"{len(report.failures)} of {total} inputs failed: {names}")
    elif not quiet:
        click.echo(f"wrote {len(report.written)} image(s) to {output_dir} in {report.seconds:.1f} s", err=True)
    return report.exit_code


main = entry_point(cli)


if __name__ == "__main__":  # pragma: no cover
    main()
