"""``rsd-train``: RSD / SinSR distillation and ResShift teacher training from a YAML config.

    rsd-train --config train/configs/tiny_rsd.yaml [--resume PATH] [key=value ...]

Overrides use dotted keys parsed as YAML values, e.g. ``optim.lr=1e-4 rsd.fake_updates=3``.
Multi-GPU / multi-node: launch the same command under ``torchrun`` (see train/scripts/).
"""
from __future__ import annotations

from typing import Optional, Tuple

import click

from rsd_deploy.cli.common import entry_point, setup_logging


@click.command(name="rsd-train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="training YAML (train/configs/*.yaml)")
@click.option("--resume", type=click.Path(), default=None,
              help="continue exactly from a step_*.pt checkpoint or the run folder holding them")
@click.option("--dry-run", is_flag=True, help="validate the config, print it resolved and exit")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", is_flag=True)
@click.argument("overrides", nargs=-1)
def cli(config_path: str, resume: Optional[str], dry_run: bool, verbose: int, quiet: bool,
        overrides: Tuple[str, ...]) -> int:
    """Train with the method in the config (rsd, sinsr or teacher). Exit codes: docs/CLI.md."""
    import os

    setup_logging(verbose, quiet or int(os.environ.get("RANK", "0")) > 0)
    from rsd_deploy.train import load_config, train

    cfg = load_config(config_path, overrides)
    if dry_run:
        import yaml

        cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
        click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    out = train(cfg, resume)
    if out is not None:
        click.echo(str(out))  # the deployable checkpoint, for scripts (the log already says "exported ...")
    return 0


main = entry_point(cli)


if __name__ == "__main__":
    main()
