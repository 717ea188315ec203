"""One run per output folder: a lock file that names its holder.

``with folder_lock(folder):`` creates ``folder/.videoattn.lock`` atomically (``O_CREAT | O_EXCL``)
holding a JSON record (host, pid, the process's start time, start date, command line) and removes
it when the block ends, also on an exception or Ctrl-C. A second run on the same folder gets
:class:`LockError` at once, naming the holder. A lock left by a process that is gone (killed,
crashed) on this host is stale: it is taken over with a warning. A process counts as gone when
its pid no longer exists, or now belongs to a process that started at another time (pid reuse).
A lock held from another host (or another pid namespace: a container) is never assumed stale (its
process cannot be checked from here): the error says how to remove it. The one exception is a
requeued SLURM job: a lock whose record has this job's ``SLURM_JOB_ID`` and a lower
``SLURM_RESTART_COUNT`` was left by an earlier run of this very job (killed at its time limit or
preempted on another node; SLURM starts a requeued job only after the old one ended): it is taken
over with a warning.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import secrets
import shlex
import socket
import sys
import time
from typing import Iterator, Optional

from videoattn.utils.errors import OneLineError
from videoattn.utils.io import WriteError, make_folder

log = logging.getLogger(__name__)
LOCK_NAME = ".videoattn.lock"
_TAKEOVER_STALE_S = 30.0  # a takeover guard older than this was left by a killed process


class LockError(OneLineError):
    """The folder is locked by another run (or its lock file cannot be read); one-line message."""


def _boot_id() -> str:
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()
    return ""


def _proc_stat(pid: int) -> Optional[list]:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or None if unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode("ascii", "replace").split()


def process_start(pid: int) -> str:
    """An identity of the process ``pid``'s start ("<boot id>:<start ticks>"); "" where unknown (non-Linux)."""
    stat = _proc_stat(pid)
    return f"{_boot_id()}:{stat[19]}" if stat and len(stat) > 19 else ""


def process_alive(pid: int, start: str = "") -> bool:
    """Whether ``pid`` runs on this host and (when ``start`` is known) is the process that started then."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _proc_stat(pid)
    if stat is not None and stat[0] in ("Z", "X"):
        return False  # exited, not yet reaped
    now = process_start(pid)
    return not (start and now and now != start)


def _pid_namespace() -> str:
    """This process's pid namespace ("pid:[4026531836]"; differs between containers); "" if unknown."""
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return ""


def _record() -> dict:
    argv = [os.path.basename(sys.executable)] + sys.argv
    return {
        "host": socket.gethostname(),
        "pid_namespace": _pid_namespace(),
        "pid": os.getpid(),
        "process_start": process_start(os.getpid()),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in argv).replace("\n", "\\n"),
        "token": secrets.token_hex(8),
        **_slurm_job(),
    }


def _slurm_job() -> dict:
    """This process's SLURM job id and restart count (both "" / 0 outside SLURM)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0").strip()
    return {
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", "").strip(),
        "slurm_restart_count": int(restarts) if restarts.isdigit() else 0,
    }


def read_lock(path: str) -> Optional[dict]:
    """The holder record in ``path``; None if the file is gone; {} if it is empty or not a record."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and "pid" in data and "host" in data else {}


def describe(holder: dict) -> str:
    return (
        f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('started')}, "
        f"command: {holder.get('command')}"
    )


def _checkable(holder: dict) -> bool:
    """Whether ``holder``'s process can be looked up from here: same host, same pid namespace."""
    ns = holder.get("pid_namespace") or ""
    return holder.get("host") == socket.gethostname() and (not ns or ns == _pid_namespace())


def _is_stale(holder: dict) -> bool:
    if not _checkable(holder):
        return False
    try:
        pid = int(holder["pid"])
    except (TypeError, ValueError):
        return False
    return not process_alive(pid, str(holder.get("process_start") or ""))


def _is_predecessor(holder: dict) -> bool:
    """Whether ``holder`` is an earlier run of this SLURM job (same job id, fewer restarts) on
    another node or container: a requeued job takes over its predecessor's lock."""
    job = _slurm_job()
    try:
        earlier = int(holder.get("slurm_restart_count") or 0) < job["slurm_restart_count"]
    except (TypeError, ValueError):
        return False
    same_job = job["slurm_job_id"] and holder.get("slurm_job_id") == job["slurm_job_id"]
    return bool(same_job and earlier and not _checkable(holder))  # here: _is_stale decides


def _stale_reason(holder: dict) -> str:
    """Why ``holder``'s lock may be taken over ("" if it may not)."""
    if _is_stale(holder):
        return "of a process that is gone"
    if _is_predecessor(holder):
        return f"of an earlier run of SLURM job {holder.get('slurm_job_id')} (requeued)"
    return ""


def _take_over(path: str, holder: dict) -> bool:
    """Remove the stale lock ``holder`` if it is still the one in ``path``; False if another process
    is taking it over right now (try again). A guard file makes the check-and-remove atomic."""
    guard = path + ".takeover"
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - os.path.getmtime(guard) > _TAKEOVER_STALE_S:
                os.remove(guard)
        return False
    try:
        if read_lock(path) == holder:
            os.remove(path)
    finally:
        os.remove(guard)
    return True


def _refusal(folder: str, path: str, holder: dict) -> LockError:
    if not holder:
        return LockError(
            f"output folder {folder} has an unreadable lock file {path} (a run starting, or one killed "
            f"while taking it); if no run uses this folder, delete {path}"
        )
    if not _checkable(holder):
        where = "another host" if holder.get("host") != socket.gethostname() else "another container of this host"
        return LockError(
            f"output folder {folder} is locked by a run on {where} ({describe(holder)}); this "
            f"process cannot tell whether it still runs. If you are sure it has ended, delete {path}"
        )
    return LockError(
        f"output folder {folder} is in use by another run ({describe(holder)}); wait for it to end "
        f"or choose another folder"
    )


def _settled_holder(path: str) -> Optional[dict]:
    """:func:`read_lock`, waiting up to a second while the file is empty (a lock being created)."""
    holder = read_lock(path)
    for _ in range(20):
        if holder != {}:
            break
        time.sleep(0.05)
        holder = read_lock(path)
    return holder


def _write_record(path: str, fd: int, record: dict) -> None:
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(path)
        raise WriteError(path, e) from e


def acquire(folder: str, attempts: int = 100) -> dict:
    """Create ``folder`` if needed and lock it; return this process's record.

    Raises :class:`LockError` if another run holds the folder, :class:`WriteError` if the folder
    cannot be created or written (checked here, before any work).
    """
    make_folder(folder)
    path = os.path.join(folder, LOCK_NAME)
    record, stale, why = _record(), None, ""
    for _ in range(attempts):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _settled_holder(path)
            if holder is None:  # released meanwhile
                continue
            reason = _stale_reason(holder) if holder else ""
            if reason:
                if _take_over(path, holder):
                    stale, why = holder, reason
                else:
                    time.sleep(0.05)  # another process is taking it over: look again
                continue
            raise _refusal(folder, path, holder) from None
        except OSError as e:
            raise WriteError(folder, e) from e
        _write_record(path, fd, record)
        if stale is not None:
            log.warning("took over the stale lock %s %s (%s)", path, why, describe(stale))
        return record
    raise LockError(f"could not lock output folder {folder}: its lock file {path} keeps changing")


def release(folder: str, record: dict) -> None:
    """Remove the lock of ``folder`` if it is still ``record``'s."""
    path = os.path.join(folder, LOCK_NAME)
    holder = read_lock(path)
    if holder and holder.get("token") == record["token"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        log.warning("the lock %s was removed or replaced by someone else while this run held it", path)


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[dict]:
    """Hold the lock of ``folder`` for the ``with`` block (see the module doc); yields the record.

    A folder this call created is removed again if the run leaves it empty.
    """
    folder = os.path.abspath(folder)
    created = not os.path.isdir(folder)
    record = acquire(folder)
    try:
        yield record
    finally:
        release(folder, record)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
