"""File helpers every part of the toolkit shares: content hashes, atomic writes, staging folders.

An atomic write goes to a temp file in the destination folder and is renamed over the destination
(``os.replace``) only once complete, so a crash or an error never leaves a half-written output and never
destroys an existing file. Temp files get the permissions a plain ``open()`` would give (umask applied).

A staging folder (``staging_dir``) holds a multi-file output while it is built; it is removed however
the block ends, SIGTERM included (``timeout``, ``docker stop``, Slurm and CI send SIGTERM, not SIGINT).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write to; it replaces ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` atomically (flushed to disk before the rename)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def output_folder_problem(path: PathLike) -> Optional[str]:
    """Why ``path`` cannot be (made into) a writable folder, or None. Creates nothing; run it before long work."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        return "exists and is not a folder"
    existing = target
    while not existing.exists():
        if existing.is_symlink():
            return f"{existing} is a dangling symlink"
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, so no folder can be created under it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable" if existing == target else f"{existing} is not writable (cannot create {target})"
    return None


class Terminated(BaseException):
    """SIGTERM, turned into an exception by ``sigterm_as_exception`` so cleanups run as on Ctrl-C.

    A BaseException like KeyboardInterrupt, so ``except Exception`` blocks do not swallow it; the CLIs
    turn it into one line and exit code 143."""


_IMPORT_RETRY_S = 0.05


def _inside_import(frame) -> bool:
    """Whether Python's import machinery is on the stack of ``frame`` (a module is being imported)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """While active, SIGTERM raises ``Terminated`` in the main thread instead of killing the process
    outright, so ``finally`` blocks and context managers clean up. Nests; no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):  # noqa: ARG001 - signal handler signature
        if _inside_import(frame):
            # Raised inside a C extension's init (torch.onnx, onnxruntime, ...), Terminated would come
            # out as "ImportError: initialization failed", which optional-import fallbacks swallow: the
            # work would go on. Re-deliver the signal shortly instead, once the import has finished.
            timer = threading.Timer(_IMPORT_RETRY_S, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
            return
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except (ValueError, OSError):  # pragma: no cover - no signals in this interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def staging_dir(parent: PathLike, prefix: str) -> Iterator[Path]:
    """A fresh hidden folder ``<parent>/<prefix>XXXX`` to build outputs in; move the finished files
    out of it inside the block. It is removed when the block ends: success, error, Ctrl-C or SIGTERM.

    ``prefix`` should start with a dot (e.g. ``".rsd-export-"``) so listings skip it."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    with sigterm_as_exception():
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def atomic_write_json(path: PathLike, data: object) -> Path:
    """``data`` as indented JSON (newline-terminated), written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
