"""How the processes of an srun or submitit-local job find each other before the process group
forms, heard and interruptible.

torch's ``init_process_group(init_method="env://")`` waits for the other processes inside C++: it
says nothing, Ctrl-C reaches Python only when the wait ends, and a missing process ends in a
30-line ``DistStoreError`` traceback after the whole timeout. Here instead:

* rank 0 opens the ``TCPStore`` at ``MASTER_ADDR:MASTER_PORT`` itself (``wait_for_workers=False``);
  the other ranks probe that address with a plain socket (no C++ retry logs) until it answers;
* every rank checks in under its own key and polls the count in short slices, so that Python's
  signal handlers run between them: Ctrl-C ends the wait at once, in one line;
* rank 0 says how many processes it still waits for, and which, at once and then every
  ``report_s`` seconds (``$VIDEOATTN_WAIT_REPORT_SECONDS``, default 60);
* after ``timeout_s`` (``dist_timeout_minutes``) it raises :class:`RendezvousError`, one line.

The store is then handed to ``init_process_group(store=...)``. Under torchrun its agent has
gathered the workers before starting them, and hosts the store: ``env://`` is used as before.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, List

import torch.distributed as dist

from videoattn.utils.errors import OneLineError
from videoattn.utils.launcher import LauncherError, LaunchInfo

logger = logging.getLogger(__name__)
PREFIX = "videoattn/rendezvous"
REPORT_ENV, REPORT_DEFAULT_S = "VIDEOATTN_WAIT_REPORT_SECONDS", 60.0
SLICE_S = 0.25  # the longest Python waits in one call; Ctrl-C acts within it


class RendezvousError(OneLineError):
    """A process of the job never came within ``dist_timeout_minutes``, or rank 0's store failed."""


def report_interval() -> float:
    """Seconds between two "waiting for ..." lines: ``$VIDEOATTN_WAIT_REPORT_SECONDS`` or 60."""
    text = os.environ.get(REPORT_ENV, "").strip()
    if not text:
        return REPORT_DEFAULT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise LauncherError(f"{REPORT_ENV}='{text}' must be a positive number of seconds")
    return value


@dataclass
class _Wait:
    """One rendezvous: who, where, until when, and when to report next."""

    launch: LaunchInfo
    timeout_s: float
    report_s: float
    start: float = field(default_factory=time.monotonic)
    next_report: float = 0.0

    @property
    def where(self) -> str:
        return f"{self.launch.master_addr}:{self.launch.master_port}"

    @property
    def limit(self) -> str:
        return f"dist_timeout_minutes={self.timeout_s / 60:g}"

    def left(self) -> float:
        return self.start + self.timeout_s - time.monotonic()

    def report_due(self) -> bool:
        now = time.monotonic()
        if now < self.next_report:
            return False
        self.next_report = now + self.report_s
        return True


def open_store(launch: LaunchInfo, timeout_s: float, report_s: float) -> dist.Store:
    """The job's store once all ``launch.world_size`` processes have checked in (see the module
    doc). Raises :class:`RendezvousError` (one line) on a timeout, and ``KeyboardInterrupt`` with
    a one-line message on Ctrl-C."""
    wait = _Wait(launch, timeout_s, report_s)
    try:
        store = _serve(wait) if launch.rank == 0 else _connect(wait)
        _check_in(store, wait)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted while waiting for the other processes at {wait.where}; nothing was written"
        ) from None
    store.set_timeout(datetime.timedelta(seconds=timeout_s))
    return store


def _store(wait: _Wait, is_master: bool, timeout_s: float) -> dist.TCPStore:
    launch = wait.launch
    return dist.TCPStore(
        launch.master_addr,
        launch.master_port,
        launch.world_size,
        is_master,
        datetime.timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )


def _serve(wait: _Wait) -> dist.TCPStore:
    """Rank 0: open the store (returns at once)."""
    try:
        return _store(wait, True, wait.timeout_s)
    except dist.DistError as e:
        raise RendezvousError(
            f"rank 0 cannot open the rendezvous port {wait.where} ({_first_line(e)}); set MASTER_PORT to a free port"
        ) from None


def _connect(wait: _Wait) -> dist.TCPStore:
    """A rank > 0: probe rank 0's address in short slices until it answers, then connect."""
    while True:
        try:
            with socket.create_connection(
                (wait.launch.master_addr, wait.launch.master_port), timeout=max(0.05, min(1.0, wait.left()))
            ):
                pass
            return _store(wait, False, max(1.0, min(10.0, wait.left())))
        except (OSError, dist.DistError) as e:
            if wait.left() <= 0:
                raise RendezvousError(
                    f"rank {wait.launch.rank} of {wait.launch.world_size}: nothing answered at "
                    f"{wait.where} (rank 0's rendezvous) within {wait.limit} "
                    f"({_first_line(e)}); was rank 0 started?"
                ) from None
            time.sleep(min(SLICE_S, max(0.0, wait.left())))


def _check_in(store: dist.Store, wait: _Wait) -> None:
    """Add this rank's key and poll the count until every process is there."""
    launch = wait.launch
    arrived = _ask(
        store, wait, lambda: (store.set(f"{PREFIX}/rank{launch.rank}", "1"), store.add(f"{PREFIX}/arrived", 1))[1]
    )
    while arrived < launch.world_size:
        if wait.left() <= 0:
            raise RendezvousError(
                f"rank {launch.rank} of {launch.world_size}: only {arrived} of "
                f"{launch.world_size} processes came to {wait.where} within {wait.limit} "
                f"(missing: {_missing(store, wait)}); {_hint(launch)}"
            )
        if launch.rank == 0 and wait.report_due():
            more = launch.world_size - arrived
            logger.info(
                "waiting for %d more process%s at %s (%d of %d here; missing: %s); waited %.0f s, giving up after %s",
                more,
                "es" if more > 1 else "",
                wait.where,
                arrived,
                launch.world_size,
                _missing(store, wait),
                time.monotonic() - wait.start,
                wait.limit,
            )
        time.sleep(min(SLICE_S, max(0.0, wait.left())))
        arrived = _ask(store, wait, lambda: store.add(f"{PREFIX}/arrived", 0))


def _ask(store: dist.Store, wait: _Wait, call: Callable[[], int]) -> int:
    try:
        return call()
    except dist.DistError as e:
        raise RendezvousError(
            f"rank {wait.launch.rank}: lost the rendezvous store at {wait.where} while waiting "
            f"for the other processes ({_first_line(e)}); did rank 0 stop?"
        ) from None


def _missing(store: dist.Store, wait: _Wait, show: int = 8) -> str:
    """``rank 1`` | ``ranks 1, 3`` | ``ranks 1, 2, ... (and 5 more)``: the ranks not checked in."""
    ranks: List[int] = [
        r
        for r in range(wait.launch.world_size)
        if not _ask(store, wait, lambda r=r: store.check([f"{PREFIX}/rank{r}"]))
    ]
    names = ", ".join(map(str, ranks[:show])) + (f" (and {len(ranks) - show} more)" if len(ranks) > show else "")
    return f"rank{'s' if len(ranks) > 1 else ''} {names}"


def _hint(launch: LaunchInfo) -> str:
    if launch.launcher == "srun":
        return (
            f"start one process per task with srun (SLURM_NTASKS={launch.world_size}), "
            f"or run a single process without the SLURM_PROCID/SLURM_NTASKS variables"
        )
    return f"start all {launch.world_size} processes"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
