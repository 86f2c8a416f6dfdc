"""Where the harness keeps things on disk, and how: one cache root, one atomic write, one lock.

Every cache (image pixels, features, pretraining checkpoints, the synthetic world, the mock
data, link farms of data roots), every result record and every checkpoint goes through these
three, so they agree on where things live and on what a reader can see:

- ``cache_root()``: ``$HARNESS_CACHE`` when it is set and not empty, else ``~/.cache/harness``
  (an empty ``HARNESS_CACHE=`` means "unset", never the current folder);
- ``atomic_write(path, write)``: a temporary file in the same folder, flushed and fsynced, then
  renamed over ``path``: a reader sees the old file or the new one, never a torn one, and a
  crash or a full disk leaves no half-written file behind (the temporary is removed);
- ``file_lock(path)``: an exclusive ``flock`` on a lock file, so that concurrent runs build a
  cache entry once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

ENV_CACHE = "HARNESS_CACHE"
# the checkout this package runs from: tasks/, leaderboards/ and the git history the records name
REPOSITORY = Path(__file__).resolve().parent.parent


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """The root folder of every harness cache (see the module docstring)."""
    value = (os.environ if environ is None else environ).get(ENV_CACHE)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "harness"


class FolderNotWritable(OSError):
    """``atomic_write`` could not create its temporary file: the folder is missing, read-only or full."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object] | bytes) -> None:
    """Write ``path`` atomically (see the module docstring).

    Args:
        path: the file to (re)place; its folder is created when missing.
        write: the bytes, or a function that writes them to the open binary file it is given.

    Raises:
        FolderNotWritable: the temporary file could not be created next to ``path``.
        OSError: writing or renaming failed (e.g. no space left); nothing is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise FolderNotWritable(exc.errno, exc.strerror or str(exc), str(path.parent)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, bytes):
                fh.write(write)
            else:
                write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
