"""``rsd-inspect PATH...``: say what a checkpoint holds (model kind, architecture, parameters, wrappers).

Every file is inspected, a bad one does not stop the others: its one-line error is printed and the exit
code is the first failure's (docs/CLI.md). Exit codes and limits: docs/CLI.md.
"""
from __future__ import annotations

import json
from typing import Sequence

import click

from rsd_deploy.cli.common import entry_point, print_error, setup_logging
from rsd_deploy.errors import RSDError


def _describe(path: str, model, as_json: bool) -> None:
    from rsd_deploy.checkpoint import sha256_file

    info = dict(model.checkpoint_info)
    info["sha256"] = sha256_file(path)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        return
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


@click.command(name="rsd-inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per checkpoint.")
@click.option("-v", "--verbose", count=True, help="Log loading details; tracebacks of unexpected errors.")
def cli(paths: Sequence[str], as_json: bool, verbose: int) -> int:
    """Load each checkpoint safely (weights_only) and describe it; a bad file is reported, the rest still
    inspected. Exit codes: docs/CLI.md."""
    from rsd_deploy.checkpoint import load_checkpoint

    setup_logging(verbose, quiet=not verbose)
    failures = []
    for path in paths:
        try:
            model = load_checkpoint(path)
        except RSDError as e:
            message = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
            print_error(message)
            failures.append(e.exit_code)
            continue
        _describe(path, model, as_json)
    if failures and len(paths) > 1:
        print_error(f"{len(failures)} of {len(paths)} checkpoints could not be inspected (see above)")
    return failures[0] if failures else 0


main = entry_point(cli)


if __name__ == "__main__":
    main()
