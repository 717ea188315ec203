"""Run a function over tasks in worker processes, each task under a time limit.

    for index, status, value in run_tasks(prepare_video, jobs, workers=4, time_limit=120):
        ...   # status: "ok" (value = fn's result) | "error" | "time limit" | "crashed" (value = why)

Unlike ``concurrent.futures.ProcessPoolExecutor`` a worker stuck in native code (a decoder that
hangs) is killed at its task's deadline and replaced, and a worker that dies (a segfault) costs only
its own task: the run goes on. Workers are started with ``spawn`` (decoders' threads and ``fork`` do
not mix), die with the main process (Linux: ``PR_SET_PDEATHSIG``; elsewhere they stop when their
pipe closes), and run one task at a time, so a deadline measures one task.
``fn`` and the tasks must be picklable (``fn`` a module-level function).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

OK, ERROR, TIME_LIMIT, CRASHED = "ok", "error", "time limit", "crashed"
READY = "ready"


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while a worker starts: the child inherits the ignored signal through ``exec``, so
    Ctrl-C (sent to the whole process group) cannot interrupt its start-up with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_main(conn, fn: Callable, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        conn.send(READY)  # fn's module is imported: deadlines start now, not during the start-up
    except (BrokenPipeError, OSError):
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, task = message
        try:
            result = (index, OK, fn(task))
        except Exception as e:  # reported, never fatal to the worker
            result = (index, ERROR, f"{type(e).__name__}: {e}")
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx, fn: Callable):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, os.getpid()), daemon=True)
        with _sigint_ignored():
            self.proc.start()
        child.close()
        self.ready = False
        self.task: Optional[int] = None
        self.deadline = float("inf")

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _poll(worker: _Worker, now: float) -> Optional[Tuple[int, str, Any]]:
    """The finished task of a busy worker, if any (kills the worker on a timeout)."""
    if worker.conn.poll():
        try:
            message = worker.conn.recv()
            if message != READY:
                return message
        except (EOFError, OSError):
            pass
    if not worker.proc.is_alive():
        worker.proc.join()
        return worker.task, CRASHED, f"worker exited with code {worker.proc.exitcode}"
    if now >= worker.deadline:
        worker.proc.kill()
        worker.proc.join()
        return worker.task, TIME_LIMIT, "killed after the time limit"
    return None


def _starting(worker: _Worker) -> bool:
    """Advance a starting worker: True once it is ready; RuntimeError if it died on the way."""
    if worker.conn.poll():
        try:
            worker.ready = worker.conn.recv() == READY
        except (EOFError, OSError):
            pass
    if not worker.ready and not worker.proc.is_alive():
        raise RuntimeError(f"a worker process died while starting (exit code {worker.proc.exitcode})")
    return worker.ready


def _assign(worker: _Worker, index: int, task: Any, time_limit: Optional[float]) -> None:
    worker.task = index
    worker.deadline = time.monotonic() + time_limit if time_limit else float("inf")
    try:
        worker.conn.send((index, task))
    except (BrokenPipeError, OSError):  # died just now: _poll reports it as crashed
        pass


def run_tasks(
    fn: Callable, tasks: Sequence[Any], workers: int, time_limit: Optional[float] = None
) -> Iterator[Tuple[int, str, Any]]:
    """Yield ``(task index, status, value)`` as tasks finish (in completion order).

    Args:
        workers: processes (>= 1), never more than tasks.
        time_limit: seconds one task may take (None: no limit), counted from when a started worker
            takes it; past it the worker is killed (status "time limit") and replaced.
    Closing the generator early (or an exception in the caller) kills every worker.
    """
    if not tasks:
        return
    ctx = mp.get_context("spawn")
    pending = collections.deque(range(len(tasks)))
    pool: List[_Worker] = [_Worker(ctx, fn) for _ in range(max(1, min(workers, len(tasks))))]
    try:
        while pending or any(w.task is not None for w in pool):
            for w in pool:
                if w.task is None and w.ready and pending:
                    index = pending.popleft()
                    _assign(w, index, tasks[index], time_limit)
            active = [w for w in pool if w.task is not None or not w.ready]
            deadline = min([w.deadline for w in active if w.task is not None] + [float("inf")])
            wait(
                [w.conn for w in active] + [w.proc.sentinel for w in active],
                timeout=min(max(0.0, deadline - time.monotonic()), 60.0),
            )
            now = time.monotonic()
            for i, w in enumerate(pool):
                if not w.ready:
                    _starting(w)
                    continue
                done = _poll(w, now) if w.task is not None else None
                if done is None:
                    continue
                if done[1] in (TIME_LIMIT, CRASHED):
                    w.stop(kill=True)
                    pool[i] = _Worker(ctx, fn) if pending else w
                w.task = None
                yield done
    finally:
        for w in pool:
            w.stop(kill=True)
