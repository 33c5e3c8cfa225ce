"""Atomic file and directory writes: a crash or kill never leaves a half-written file that
looks valid. Files are written to a temporary name in the same directory, flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX).

- Permissions follow the umask, as ordinary writes do (``mkstemp`` alone would give 0600).
- A writer removes the temporaries a killed run of it left beside its target
  (``.NAME.*.tmp``) before it writes again.
- A directory is replaced only when it is a previous output of the same writer (every file in
  it is one the writer writes) or empty, unless ``overwrite``; a regular file is never
  turned into a directory. Both are refused with one line naming the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from leanbert.errors import LeanbertError


class OutputError(LeanbertError):
    """An output path that cannot be written as asked (a file, someone else's directory)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_temporaries(directory: Path, pattern: str = ".*.tmp") -> None:
    """Remove what killed writers left in ``directory``: entries matching ``pattern`` (files or
    directories; by default every ``.NAME.*.tmp`` of :func:`atomic_open` / :func:`atomic_directory`)."""
    if not directory.is_dir():
        return
    for stale in directory.glob(pattern):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()


def check_output_dir(path: str | Path, what: str = "output") -> Path:
    """``path`` as a directory to write into: refuses a regular file (one line, the fix)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p} is a file, not a directory; choose another path or remove the file")
    return p


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise OutputError(f"{path} is a directory; expected a file path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def _check_replaceable(path: Path, owned: Callable[[str], bool] | None, overwrite: bool) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputError(f"{path} exists and is a file; choose another output directory or remove the file")
    if overwrite or owned is None:
        return
    foreign = sorted(p.name for p in path.iterdir() if not owned(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"{path} exists and holds files leanbert did not write there ({shown}); "
            "choose another output directory, or pass --overwrite to replace it"
        )


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, owned: Callable[[str], bool] | None = None,
                     overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` when complete.

    An existing ``path`` is replaced only after the new one is complete: it is first moved
    aside, then the new directory is renamed into place, then the old one is deleted.
    ``owned(name)`` says whether a file name is one this writer writes: an existing directory
    holding anything else is refused unless ``overwrite`` (None: replace without checking, for
    directories only leanbert writes, such as training checkpoints).
    """
    path = Path(path).absolute()
    if path == Path.cwd() or path in Path.cwd().parents:
        raise OutputError(f"refusing to replace {path}, the current directory or one above it; "
                          "give a new directory name")
    _check_replaceable(path, owned, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(path.parent, f".{path.name}.*.tmp")
    if path.exists():  # an interrupted replace left the previous version aside: it is stale now
        remove_temporaries(path.parent, f".{path.name}.old-*")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        mode = 0o666 & ~_umask()
        for child in tmp.iterdir():
            if child.is_file():
                os.chmod(child, mode)  # some writers (safetensors) create their files 0600
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
