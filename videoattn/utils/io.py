"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A process killed at any point leaves either the old file or the new one, never half a file.
New files get the umask's normal mode (``0o666 & ~umask``, e.g. 0o644), as ``open()`` gives.
A failed write (disk full, read-only, no permission) raises :class:`WriteError` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import secrets
from typing import Any, BinaryIO, Iterable, Iterator, Optional, Sequence

from videoattn.utils.errors import OneLineError


class WriteError(OneLineError, OSError):
    """Writing an output file failed; ``str()`` is one line naming the file and the OS error."""

    def __init__(self, path: str, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.filename = path

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}" + (f" [Errno {self.errno}]" if self.errno else "")


def make_folder(folder: str) -> None:
    """``os.makedirs(folder, exist_ok=True)``; :class:`WriteError` naming ``folder`` if it cannot be made."""
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # a file of that name is in the way
        raise WriteError(folder, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))) from None
    except OSError as e:
        raise WriteError(folder, e) from e


def _create_temp(path: str) -> str:
    """Create an empty ``.<name>.<random>.tmp`` next to ``path`` with mode ``0o666 & ~umask``."""
    folder, name = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``.

    An ``OSError`` while creating, writing (in the ``with`` body), syncing or renaming is raised as
    :class:`WriteError` naming ``path``; the temporary file is removed in every case.
    """
    path = os.path.abspath(os.fspath(path))
    tmp = ""
    try:
        make_folder(os.path.dirname(path))
        tmp = _create_temp(path)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except WriteError:
        raise
    except OSError as e:
        raise WriteError(path, e) from e
    finally:
        if tmp and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` made strict-JSON: NaN/inf -> null, tensor/numpy scalars -> Python numbers,
    tuples -> lists (recursively through dicts and lists)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str, obj: Any, indent: Optional[int] = 2) -> None:
    """``obj`` as strict JSON (:func:`json_safe`), atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=indent) + "\n")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text: a header row, then ``rows`` (``\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def atomic_write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    atomic_write_text(path, csv_text(header, rows))


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def append_bytes(f: BinaryIO, data: bytes, path: str) -> None:
    """Append ``data`` to the unbuffered file ``f`` (``open(path, "ab", buffering=0)``) completely or
    not at all: after a failed write the file is cut back to its old length and :class:`WriteError`
    is raised (a reader never sees half a line)."""
    start = f.seek(0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[f.write(view) :]
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(f.fileno(), start)
        raise WriteError(path, e) from e
