"""``rsd-eval``: evaluate a model on an LR folder (optionally with HR references), like the papers.

    rsd-eval LR_DIR --hr HR_DIR -o report_dir [--checkpoint CKPT --vq VQ] [--lpips-weights lpips_alex.pth]

Options -> ``EvalConfig`` -> ``rsd_deploy.train.eval_set.evaluate_set`` -> report.json + report.md.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from rsd_deploy.cli.common import reuse_freed_memory, run_command, setup_logging
from rsd_deploy.pipeline.loading import ModelSource
from rsd_deploy.types import ModelKind, TileConfig

_PATH = click.Path(path_type=Path)
_DIR = click.Path(path_type=Path, file_okay=False)


@click.command(name="rsd-eval", context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Exit codes: docs/CLI.md (1: some images failed; they are listed in the report).")
@click.argument("lr_dir", type=_DIR)
@click.option("--hr", "hr_dir", type=_DIR, default=None,
              help="HR references (same file names or stems). Without: no-reference metrics only.")
@click.option("-o", "--output", "output_dir", required=True, type=_DIR, help="folder for report.json / report.md")
@click.option("--checkpoint", type=_PATH, help="UNet / SinSR / RSD weights; default: the embedded demo model")
@click.option("--vq", type=_PATH, help="VQ-f4 autoencoder weights; needed with --checkpoint")
@click.option("--model", type=click.Choice(ModelKind.choices()), default=None,
              help="sampler for --checkpoint (rsd is detected from the weights)")
@click.option("--tile", type=click.IntRange(min=0), default=128, show_default=True,
              help="tile side in LR px (128 = the official 512 px HR chops); 0 = whole images")
@click.option("--overlap", type=click.IntRange(min=0), default=16, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="evaluate the first N images only")
@click.option("--lpips-weights", type=_PATH, default=None, help="local LPIPS-Alex weights file")
@click.option("--pyiqa-weights", type=_DIR, default=None,
              help="folder with local pyiqa CLIPIQA / MUSIQ weights (computed only when present)")
@click.option("--save-images", is_flag=True, help="also write the SR images to OUTPUT/images/")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", is_flag=True)
def cli(lr_dir: Path, hr_dir: Optional[Path], output_dir: Path, checkpoint: Optional[Path], vq: Optional[Path],
        model: Optional[str], tile: int, overlap: int, limit: Optional[int], lpips_weights: Optional[Path],
        pyiqa_weights: Optional[Path], save_images: bool, device: Optional[str], precision: str, seed: int,
        verbose: int, quiet: bool) -> int:
    """Super-resolve every image of LR_DIR at full size (tiled) and report PSNR/SSIM-Y, LPIPS-Alex, CLIPIQA, MUSIQ.

    Exit codes: docs/CLI.md.
    """
    setup_logging(verbose, quiet)
    reuse_freed_memory()
    from rsd_deploy.train.eval_set import EvalConfig, evaluate_set

    config = EvalConfig(
        lr_dir=lr_dir, hr_dir=hr_dir, output_dir=output_dir,
        source=ModelSource(checkpoint=checkpoint, vq=vq, model=ModelKind(model) if model else None, device=device,
                           precision=precision),
        tiling=TileConfig(tile=tile or None, overlap=overlap if tile else 0), seed=seed, limit=limit,
        lpips_weights=lpips_weights, pyiqa_weights=pyiqa_weights, save_images=save_images,
        command=("rsd-eval " + " ".join(shlex.quote(a) for a in sys.argv[1:])
                 if Path(sys.argv[0]).name == "rsd-eval" else ""))
    report = evaluate_set(config)
    if not quiet:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in report.means.items() if k != "seconds")
        click.echo(f"{len(report.rows)} images: {shown or 'no metrics'}; report in {output_dir / 'report.md'}", err=True)
    if report.failures:
        click.echo(f"error: {len(report.failures)} of {len(report.failures) + len(report.rows)} images failed: "
                   + ", ".join(f["image"] for f in report.failures), err=True)
    return report.exit_code


def main(argv: Optional[Sequence[str]] = None) -> None:
    sys.exit(run_command(cli, argv))


if __name__ == "__main__":  # pragma: no cover
    main()
