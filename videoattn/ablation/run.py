"""Run cells: ``torchrun --standalone --nproc_per_node=N tools/train_net.py``, then ``tools/test_net.py``
(under torchrun too when N > 1), up to ``jobs`` cells side by side, from one polling loop.

Each process is started in its own session (its own process group; ``--standalone`` gives each
torchrun its own free rendezvous port) with its output appended to the cell's ``ablate.log``.
Its peak RSS is ``ru_maxrss`` from ``os.wait4``: the largest single process among the step and the
children it reaped (torchrun's workers), not their sum. SIGINT or SIGTERM to the runner sends
SIGTERM to every running cell's process group (train_net writes a checkpoint and exits; a rerun
resumes there), waits for them, and returns 128 + the signal; a second signal kills them. On
Linux the runner's death (SIGKILL) sends SIGTERM to its torchrun processes too (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from videoattn.ablation.cells import LOG, StepRecord, append_step, mark_done
from videoattn.ablation.grid import Cell, Grid

POLL_S = 0.2  # how often the loop looks at its processes (cheap: one wait4 each)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class CellJob:
    """What one cell runs: the train and test command lines, in the cell's folder."""

    cell: Cell
    folder: str
    train: Sequence[str]
    test: Sequence[str]


def cell_job(grid: Grid, cell: Cell, folder: str, tools_dir: str) -> CellJob:
    args = ["--config", grid.base_config, *cell.overrides, f"output_dir={folder}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={grid.nproc}"]
    test = torchrun if grid.nproc > 1 else [sys.executable]
    return CellJob(
        cell,
        folder,
        [*torchrun, os.path.join(tools_dir, "train_net.py"), *args],
        [*test, os.path.join(tools_dir, "test_net.py"), *args],
    )


def child_env(threads: Optional[int]) -> Dict[str, str]:
    """The environment of the cells' processes: this one, with this videoattn first on PYTHONPATH (the
    tools run the same code as the runner) and ``OMP_NUM_THREADS=threads`` if given."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _die_with_runner() -> None:  # in the child, before exec: SIGTERM when the runner dies (Linux)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Child:
    """One step's process (its own process group), reaped with ``os.wait4`` for its rusage."""

    def __init__(self, step: str, argv: Sequence[str], folder: str, env: Dict[str, str]) -> None:
        self.step, self.started, self.stopped = step, time.time(), False
        with open(os.path.join(folder, LOG), "ab") as log:
            log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {step}: {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_runner,
            )

    def poll(self) -> Optional[StepRecord]:
        """The step's record once it has exited, else None."""
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        now = time.time()
        cpu = usage.ru_utime + usage.ru_stime
        return StepRecord(self.step, self.proc.returncode, now - self.started, cpu, usage.ru_maxrss, now, self.stopped)

    def signal(self, sig: int) -> None:
        self.stopped = True
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class StopSignals:
    """Record SIGINT / SIGTERM (and ``extra``) instead of dying: ``signum`` is the first one seen,
    ``count`` how many arrived. The previous handlers are restored on exit."""

    def __init__(self, extra: Sequence[int] = ()) -> None:
        self.signals = tuple(STOP_SIGNALS) + tuple(extra)
        self.signum: Optional[int] = None
        self.count = 0

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        self.count += 1

    def __enter__(self) -> "StopSignals":
        self.previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


@dataclass
class Outcome:
    done: List[Cell] = field(default_factory=list)
    failed: List[Cell] = field(default_factory=list)
    stopped_by: Optional[int] = None  # the signal that stopped the run


@dataclass
class _Running:
    job: CellJob
    child: Child


def _advance(run: _Running, record: StepRecord, env: Dict[str, str], outcome: Outcome, say) -> bool:
    """Handle a finished step: start the test after a good training, or finish the cell. True if
    the cell still runs."""
    cell, folder = run.job.cell, run.job.folder
    append_step(folder, record)
    if record.stopped and not (record.exit == 0 and record.step == "test"):
        say(f"{cell.name}: stopped ({record.step}_net exit {record.exit}); a rerun continues it")
        return False
    if record.exit == 0 and record.step == "train":
        run.child = Child("test", run.job.test, folder, env)
        return True
    if record.exit == 0:
        try:
            metrics = mark_done(folder)
        except ValueError as e:
            say(f"{cell.name}: FAILED: {e}")
            outcome.failed.append(cell)
            return False
        say(f"{cell.name}: done, test video top-1 {100 * metrics['video_top1']:.2f}%")
        outcome.done.append(cell)
        return False
    say(f"{cell.name}: FAILED ({record.step}_net exit {record.exit}); see {os.path.join(folder, LOG)}")
    outcome.failed.append(cell)
    return False


def run_cells(
    jobs: Sequence[CellJob],
    parallel: int,
    env: Dict[str, str],
    say: Callable[[str], None] = print,
    after_cell: Callable[[], None] = lambda: None,
    stop: Optional[StopSignals] = None,
) -> Outcome:
    """Run ``jobs`` in order, ``parallel`` at a time; ``after_cell()`` after each cell ends (e.g. to
    rewrite the tables). Stops early on a signal recorded by ``stop`` (default: SIGINT, SIGTERM)."""
    outcome, pending, running = Outcome(), list(jobs), []  # type: ignore[var-annotated]
    with stop or StopSignals() as stop:
        while pending or running:
            if stop.signum and outcome.stopped_by is None:
                outcome.stopped_by = stop.signum
                say(f"signal {signal.Signals(stop.signum).name}: stopping {len(running)} running cell(s)")
                for r in running:
                    r.child.signal(signal.SIGTERM)
                pending.clear()
            if stop.count > 1:
                for r in running:
                    r.child.signal(signal.SIGKILL)
            while pending and len(running) < parallel:
                job = pending.pop(0)
                say(f"{job.cell.name}: training ({job.folder})")
                running.append(_Running(job, Child("train", job.train, job.folder, env)))
            for r in list(running):
                record = r.child.poll()
                if record is not None and not _advance(r, record, env, outcome, say):
                    running.remove(r)
                    after_cell()
            time.sleep(POLL_S)
    return outcome
