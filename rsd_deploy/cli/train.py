"""``rsd-train``: RSD / SinSR distillation and ResShift teacher training from a YAML config.

    rsd-train --config train/configs/tiny_rsd.yaml [-o DIR] [--resume RUN] [--new-run] [key=value ...]
    rsd-train export CKPT_OR_RUN [-o ema_model.pth]

Overrides use dotted keys parsed as YAML values, e.g. ``optim.lr=1e-4 rsd.fake_updates=3``.
Paths inside the config file resolve against the file's folder; paths on the command line against
the current folder. Multi-GPU / multi-node: launch the same command under ``torchrun`` (see
train/scripts/torchrun_train.sh).

Exit codes (docs/CLI.md): 0 done; 2 bad config, options or output folder (including a folder that
already holds a run); 3 unreadable checkpoint or LPIPS weights; 1 a non-finite loss; 70 unexpected
(run with -v for the traceback); 130 / 143 interrupted / terminated.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence, Tuple

import click

from rsd_deploy.cli.common import run_command, setup_logging


@click.command(name="rsd-train", context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Export the EMA of any checkpoint: rsd-train export CKPT_OR_RUN [-o FILE]")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="training YAML (train/configs/*.yaml)")
@click.option("-o", "--output-dir", default=None, help="run folder (overrides output_dir: in the config)")
@click.option("--resume", type=click.Path(), default=None,
              help="continue exactly from a run folder (its newest readable checkpoint) or a step_*.pt file")
@click.option("--new-run", is_flag=True,
              help="when the run folder already holds a run, start a separate one in NAME-2, NAME-3 ... "
                   "(with --resume: fork the run from that checkpoint); nothing existing is touched")
@click.option("--dry-run", is_flag=True, help="validate the config, print it resolved and exit")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", is_flag=True)
@click.argument("overrides", nargs=-1)
def cli(config_path: str, output_dir: Optional[str], resume: Optional[str], new_run: bool, dry_run: bool,
        verbose: int, quiet: bool, overrides: Tuple[str, ...]) -> int:
    """Train with the method in the config (rsd, sinsr, teacher or vq). Exit codes: docs/CLI.md."""
    import os

    setup_logging(verbose, quiet or int(os.environ.get("RANK", "0")) > 0)
    from rsd_deploy.train import load_config, train

    if output_dir is not None:
        if not output_dir.strip():
            raise click.BadParameter("is empty; give a folder (e.g. -o runs/my_run)", param_hint="-o")
        overrides = (*overrides, f"output_dir={output_dir}")
    cfg = load_config(config_path, overrides)
    if dry_run:
        import yaml

        cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
        click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    out = train(cfg, resume, new_run=new_run)
    if out is not None:
        click.echo(str(out))  # the deployable checkpoint, for scripts (the log already says "exported ...")
    return 0


@click.command(name="rsd-train export", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", default=None,
              help="output file: .pth (official key layout, default RUN/<method>_ema_model_<step>.pth) or .safetensors")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", is_flag=True)
def export_cli(checkpoint: str, output: Optional[str], verbose: int, quiet: bool) -> int:
    """Export the EMA network of a training checkpoint (any step, like the released ema_model_2800.pth)."""
    setup_logging(verbose, quiet)
    from rsd_deploy.train import export_checkpoint

    if output is not None:
        from pathlib import Path

        from rsd_deploy.train.rundir import check_writable

        if not output.strip():
            raise click.BadParameter("is empty; give a file name", param_hint="-o")
        check_writable(Path(output).parent, what="the folder of -o")
    click.echo(str(export_checkpoint(checkpoint, output)))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point: ``rsd-train export ...`` runs the export command, anything else trains."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "export":
        sys.exit(run_command(export_cli, args[1:]))
    sys.exit(run_command(cli, args))


if __name__ == "__main__":
    main()
