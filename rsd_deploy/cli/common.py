"""Helpers every rsd-* command shares: logging setup and turning errors into one line + exit code.

Usage in a command module::

    @click.command()
    ...
    def cli(...) -> int: ...          # returns the exit code (0 = success)

    def main(argv=None) -> None:
        sys.exit(run_command(cli, argv))
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

import click

from rsd_deploy.errors import RSDError

_PACKAGE_LOGGER = "rsd_deploy"


class _CliFormatter(logging.Formatter):
    """INFO and below: the message only; WARNING and above: ``warning: ...`` / ``error: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class _TqdmStderrHandler(logging.StreamHandler):
    """Writes through tqdm.write so log lines do not break an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """rsd_deploy logs to stderr: INFO by default, DEBUG with -v, only errors with -q."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logger = logging.getLogger(_PACKAGE_LOGGER)
    for h in list(logger.handlers):
        if isinstance(h, _TqdmStderrHandler):
            logger.removeHandler(h)
    handler = _TqdmStderrHandler()
    handler.setFormatter(_CliFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def print_error(message: str) -> None:
    """The one-line error form every command uses: ``error: <message>`` on stderr."""
    click.echo(f"error: {message}", err=True)


def run_command(command: click.Command, argv: Optional[Sequence[str]] = None) -> int:
    """Run a click command and return its exit code.

    The command returns an int exit code (None = 0). RSDError -> ``error: <msg>`` + its exit
    code; usage errors -> click's message + 2; Ctrl-C -> 130. Other exceptions are bugs and
    propagate with their traceback.
    """
    try:
        result = command.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except RSDError as e:
        print_error(str(e))
        return e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return int(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print_error("interrupted")
        return 130
    if isinstance(result, int):
        return result
    return 0
