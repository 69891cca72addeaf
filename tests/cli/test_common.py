"""The shared runner every rsd-* command goes through: one line per error, documented exit codes."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest

from rsd_deploy.cli import bench, eval as eval_cli, export, inspect, train, upscale
from rsd_deploy.cli.common import EXIT_CODES, run_command
from rsd_deploy.errors import CheckpointError, ConfigError, ManifestError

REPO = Path(__file__).resolve().parents[2]


def _command(exc: BaseException):
    @click.command(name="rsd-demo")
    @click.option("-v", "--verbose", count=True)
    def cli(verbose: int) -> int:
        raise exc

    return cli


@pytest.mark.parametrize("exc, code, words", [
    (ValueError("graph input 'x' has shape (1, 4) but got (1, 3)\nsecond line"), 70,
     "rsd-demo: unexpected ValueError (graph input 'x' has shape (1, 4) but got (1, 3)); run with -v for details"),
    (RuntimeError(), 70, "rsd-demo: unexpected RuntimeError; run with -v for details"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out.png"), 74,
     "rsd-demo: /data/out.png: No space left on device; run with -v for details"),
    (MemoryError(), 70, "rsd-demo: out of memory"),
    (CheckpointError("a.pth: not a checkpoint; pass the .pth file"), 3, "a.pth: not a checkpoint"),
    (ManifestError("m.json: bad"), 9, "m.json: bad"),
    (ConfigError("--seed -1 is out of range"), 2, "--seed -1 is out of range"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_every_exception_is_one_line_and_a_documented_code(capsys, exc, code, words):
    assert run_command(_command(exc), []) == code
    err = capsys.readouterr().err.lstrip("\n")  # click echoes a newline after ^C
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert "Traceback" not in err
    assert code in EXIT_CODES


def test_verbose_shows_the_traceback_first(capsys):
    assert run_command(_command(ValueError("boom")), ["-v"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "ValueError: boom" in err
    assert err.strip().splitlines()[-1] == "error: rsd-demo: unexpected ValueError (boom); run with -v for details"


@pytest.mark.parametrize("module", [upscale, inspect, export, bench, train, eval_cli])
def test_click_usage_errors_exit_2_in_one_line(capsys, module):
    code = run_command(module.cli, ["--no-such-option"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "No such option '--no-such-option'" in err, err
    assert f"see {module.cli.name} --help" in err


@pytest.mark.parametrize("module", [upscale, inspect, export, bench, train])
def test_every_command_turns_a_surprise_into_one_line(capsys, monkeypatch, module, tmp_path):
    """A bug deep inside any command (here: the logging setup raising) gives the one-line form, exit 70."""
    def boom(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(module, "setup_logging", boom, raising=False)
    monkeypatch.setattr("logging.basicConfig", boom)  # rsd-bench configures logging itself
    args = {"upscale": [str(tmp_path / "a.png"), "-o", str(tmp_path / "o")], "inspect": [str(tmp_path / "a.pth")],
            "export": ["-o", str(tmp_path / "o")], "bench": ["-o", str(tmp_path / "o")],
            "train": ["--config", str(tmp_path / "c.yaml")]}[module.__name__.rsplit(".", 1)[1]]
    assert run_command(module.cli, args) == 70
    err = capsys.readouterr().err
    assert err == f"error: {module.cli.name}: unexpected ZeroDivisionError (division by zero); run with -v for details\n"
    assert not (tmp_path / "o").exists()


def test_sigterm_runs_cleanups_and_exits_143(tmp_path):
    """SIGTERM (timeout, docker stop, CI) ends a command as Ctrl-C does: finally blocks and staging cleanup run."""
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, click
        from rsd_deploy.cli.common import run_command
        from rsd_deploy.fileio import staging_dir

        @click.command(name="rsd-slow")
        def cli():
            with staging_dir({str(tmp_path)!r}, ".rsd-slow-") as stage:
                (stage / "half.onnx").write_bytes(b"x" * 10)
                print("staged", flush=True)
                time.sleep(60)

        sys.exit(run_command(cli, []))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "staged"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rsd-slow-")]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err == "error: rsd-slow: terminated (SIGTERM); nothing half-written was kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.py"]


def test_sigterm_during_an_import_waits_for_it_then_exits_143(tmp_path):
    """SIGTERM inside an import is held until the import ends: raised inside a C extension's init it would
    become "ImportError: initialization failed", which optional-import fallbacks swallow (exit 70 in CI)."""
    marker = tmp_path / "imported"
    (tmp_path / "slow_module.py").write_text(textwrap.dedent(f"""
        import os, signal, time
        os.kill(os.getpid(), signal.SIGTERM)  # the signal lands mid-import
        time.sleep(0.3)
        open({str(marker)!r}, "w").close()
    """))
    script = tmp_path / "importer.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, click
        sys.path.insert(0, {str(tmp_path)!r})
        from rsd_deploy.cli.common import run_command
        from rsd_deploy.fileio import staging_dir

        @click.command(name="rsd-slow")
        def cli():
            with staging_dir({str(tmp_path)!r}, ".rsd-slow-"):
                try:
                    import slow_module  # noqa: F401
                except ImportError:
                    print("swallowed", flush=True)
                time.sleep(60)

        sys.exit(run_command(cli, []))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr == "error: rsd-slow: terminated (SIGTERM); nothing half-written was kept\n"
    assert marker.exists() and proc.stdout == ""
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".rsd-slow-")]


def test_exit_code_table_is_documented_once_and_linked():
    doc = (REPO / "docs" / "CLI.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in doc, code
    assert "docs/CLI.md" in (REPO / "README.md").read_text()
    for module in (upscale, inspect, export, bench, train, eval_cli):
        assert "docs/CLI.md" in (module.cli.help or "") + (module.cli.epilog or ""), module.__name__
    assert os.environ.get("RSD_TRACEBACK", "") in ("", "0")  # the suite must not run with tracebacks forced on
