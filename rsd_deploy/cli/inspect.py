"""``rsd-inspect PATH...``: say what a checkpoint holds (model kind, architecture, parameters, wrappers)."""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

import click

from rsd_deploy.cli.common import run_command, setup_logging


@click.command(name="rsd-inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per checkpoint.")
def cli(paths: Sequence[str], as_json: bool) -> int:
    """Load each checkpoint safely (weights_only) and describe it."""
    from rsd_deploy.checkpoint import load_checkpoint, sha256_file

    setup_logging(quiet=True)
    for path in paths:
        model = load_checkpoint(path)
        info = dict(model.checkpoint_info)
        info["sha256"] = sha256_file(path)
        if as_json:
            click.echo(json.dumps(info, sort_keys=True))
            continue
        cfg = info["config"]
        click.echo(f"{path}: {info['role']}, {info['parameters']:,} parameters")
        if info["wrappers"]:
            click.echo(f"  unwrapped from: {' -> '.join(info['wrappers'])}")
        if info["kind"] == "unet":
            click.echo(f"  model_channels {cfg['model_channels']}, channel_mult {cfg['channel_mult']}, "
                       f"res blocks {cfg['num_res_blocks']}, swin {cfg['swin_embed_dim']}-d x{cfg['swin_depth']} "
                       f"window {cfg['window_size']}, construction size {cfg['image_size']}, "
                       f"noise channels {cfg['noise_channels']}, latent multiple {model.config.input_multiple}")
        else:
            click.echo(f"  ch {cfg['ch']}, ch_mult {cfg['ch_mult']}, res blocks {cfg['num_res_blocks']}, "
                       f"codebook {cfg['n_embed']} x {cfg['embed_dim']}")
        click.echo(f"  sha256 {info['sha256']}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    sys.exit(run_command(cli, argv))


if __name__ == "__main__":
    main()
