"""Helpers every rsd-* command shares: logging setup and turning errors into one line + exit code.

Usage in a command module::

    @click.command(name="rsd-thing")   # the name is the prefix of unexpected-error lines
    ...
    def cli(...) -> int: ...          # returns the exit code (0 = success)

    main = entry_point(cli)           # console script; tests call run_command(cli, argv)

Every exception becomes one stderr line and an exit code from ``EXIT_CODES`` (docs/CLI.md):
project errors (rsd_deploy.errors) keep their codes, usage errors exit 2, anything unexpected exits
70 with ``run with -v for details`` (-v prints the traceback), SIGTERM cleans up like Ctrl-C.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import click

from rsd_deploy.errors import RSDError
from rsd_deploy.fileio import Terminated, sigterm_as_exception

_PACKAGE_LOGGER = "rsd_deploy"


class _CliFormatter(logging.Formatter):
    """INFO and below: the message only; WARNING and above: ``warning: ...`` / ``error: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:  # logged with exc_info (only at -v): the traceback, then the line
            message = f"{self.formatException(record.exc_info)}\n{message}"
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


def reuse_freed_memory() -> bool:
    """Make glibc keep large freed blocks for reuse instead of returning them to the OS.

    Torch frees and re-allocates every tile's activations; with glibc's defaults blocks above the
    (dynamic, <= 32 MB) mmap threshold go back to the kernel and are page-faulted in again on the
    next tile. On a CPU rsd-upscale run that was ~40 % of the CPU time spent in the kernel
    (1.8 M page faults for nine 64-px tiles; 0.27 M with this). Returns False off glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, (1 << 31) - 1))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


class OutputFolder(click.Path):
    """A ``-o`` folder option: refuses ``''`` (which would silently mean the current folder) as a usage error."""

    def __init__(self, path_type: type = Path) -> None:
        super().__init__(path_type=path_type, file_okay=False)

    def convert(self, value, param, ctx):  # type: ignore[override]
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path would write into the current folder; pass a folder name (or . on purpose)",
                      param, ctx)
        return super().convert(value, param, ctx)


def check_output_folder(path: Path, option: str = "-o") -> None:
    """Fail fast, before any model is loaded, when ``path`` cannot become a writable folder (ConfigError)."""
    from rsd_deploy.errors import ConfigError
    from rsd_deploy.fileio import output_folder_problem

    problem = output_folder_problem(path)
    if problem:
        raise ConfigError(f"{option} {path}: {problem}; choose another {option} folder")


def print_error(message: str) -> None:
    """The one-line error form every command uses: ``error: <message>`` on stderr."""
    click.echo(f"error: {message}", err=True)


#: exit codes of every rsd-* command (docs/CLI.md prints this table; keep the two in step)
EXIT_OK = 0
EXIT_UNEXPECTED = 70  # an exception the project did not anticipate (a bug or an unhandled case)
EXIT_OS_ERROR = 74  # the operating system refused (disk full, permissions) where no check caught it
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (timeout, docker stop, Slurm, CI)
EXIT_CODES = {
    0: "success",
    1: "a general failure (e.g. rsd-bench measured nothing)",
    2: "usage error: a bad option, option value or config (also click's own usage errors)",
    3: "a checkpoint cannot be read, recognised or loaded (includes NaN/Inf or non-float weights)",
    4: "a tensor or image shape the model cannot take",
    5: "an image cannot be read or written (also an image too large for --max-output-megapixels)",
    6: "ONNX export, an ONNX pre-pass or a parity check failed",
    7: "an optional runtime (ONNX Runtime, TensorRT, CUDA, OpenVINO) is missing or has no device",
    8: "a TensorRT engine was built for another TensorRT version, GPU or graph",
    9: "an export folder's manifest.json is missing, invalid or points at missing/changed files",
    10: "rsd-export --strict-accuracy: an FP16/INT8 pipeline is below its PSNR threshold",
    11: "a network produced NaN/Inf for an image (fp16 overflow: use fp32/bf16; or weights that overflow)",
    EXIT_UNEXPECTED: "unexpected internal error: one line; run again with -v for the traceback and report it",
    EXIT_OS_ERROR: "an operating-system error no check anticipated (disk full, permissions, ...)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); staged partial outputs are removed",
    EXIT_TERMINATED: "terminated (SIGTERM); staged partial outputs are removed",
}


def _wants_traceback(argv: Sequence[str]) -> bool:
    """-v / -vv / --verbose anywhere before ``--`` (or RSD_TRACEBACK=1) shows the traceback of an unexpected error."""
    if os.environ.get("RSD_TRACEBACK", "") not in ("", "0"):
        return True
    for arg in argv:
        if arg == "--":
            break
        if arg == "--verbose" or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"}):
            return True
    return False


def _one_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= 300 else first[:297] + "..."


def describe_unexpected(error: BaseException) -> Tuple[str, int]:
    """(what happened, exit code) for an exception that is not an RSDError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return (f"out of memory ({_one_line(error) or type(error).__name__}); use smaller inputs, "
                f"--tile or --tile-batch", EXIT_UNEXPECTED)
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}", EXIT_OS_ERROR
    detail = _one_line(error)
    kind = type(error)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return f"unexpected {name}" + (f" ({detail})" if detail else ""), EXIT_UNEXPECTED


def run_command(command: click.Command, argv: Optional[Sequence[str]] = None) -> int:
    """Run a click command and return its exit code (see ``EXIT_CODES``); never raises, never prints a
    traceback unless asked (-v/--verbose).

    The command returns an int exit code (None = 0). RSDError -> ``error: <msg>`` + its exit code;
    click usage errors -> one ``error:`` line + 2; Ctrl-C -> 130; SIGTERM -> 143 (cleanups run);
    any other exception -> ``error: <command>: <what happened>; run with -v for details`` + 70 (74 for
    an OSError), and with -v the traceback first.
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    name = command.name if command.name and command.name != "cli" else Path(sys.argv[0]).name or "rsd"
    try:
        with sigterm_as_exception():
            result = command.main(args=args, prog_name=name, standalone_mode=False)
    except RSDError as e:
        print_error(_one_line(e) or type(e).__name__)
        return e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.UsageError as e:
        hint = f"; see {e.ctx.command_path} --help" if e.ctx is not None else ""
        print_error(_one_line(e.format_message()).rstrip(".") + hint)
        return int(e.exit_code)
    except click.ClickException as e:
        print_error(_one_line(e.format_message()))
        return int(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print_error(f"{name}: interrupted; nothing half-written was kept")
        return EXIT_INTERRUPTED
    except Terminated:
        print_error(f"{name}: terminated (SIGTERM); nothing half-written was kept")
        return EXIT_TERMINATED
    except SystemExit as e:  # a library or click callback called sys.exit()
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001 - the one place that turns surprises into one line
        what, code = describe_unexpected(e)
        if _wants_traceback(args):
            traceback.print_exc(file=sys.stderr)
        print_error(f"{name}: {what}; run with -v for details")
        return code
    if isinstance(result, int):
        return result
    return 0


def entry_point(command: click.Command) -> Callable[[Optional[Sequence[str]]], None]:
    """The console-script ``main`` of a command: ``main = entry_point(cli)``; exits with ``run_command``'s code."""

    def main(argv: Optional[Sequence[str]] = None) -> None:
        sys.exit(run_command(command, argv))

    main.__doc__ = f"Console entry point of {command.name}: one-line errors and the documented exit codes."
    return main
