"""``--executor slurm``: the grid's unfinished cells as one submitit job array, through
tools/submit.py's machinery (:mod:`videoattn.train.submit`: the USR1 preemption signal, the sbatch
parameters, the requeue hand-over). ``--executor submitit-local`` runs the same array here.

Each array task is one cell on one node: a single SLURM task with the cell's GPUs
(``--gpus-per-cell``, default the grid's ``nproc``; 0 for CPU cells) that runs exactly what the
local runner runs (:func:`videoattn.ablation.run.run_cells`: torchrun train_net, then test_net).
SLURM's USR1 before the time limit (or SIGTERM) reaches the task: it stops the cell's processes
with SIGTERM (train_net writes a checkpoint), and after USR1 hands the signal to submitit, which
requeues the task; the requeued cell resumes. ``--wait`` waits for the array and writes the tables;
without it, ``--report-only`` writes them once the array has ended.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from typing import Callable, List, Optional

from videoattn.ablation.cells import error_line
from videoattn.ablation.grid import Grid
from videoattn.ablation.run import CellJob, StopSignals, child_env, run_cells
from videoattn.train.submit import executor_parameters, failure_line, hand_over_to_submitit, make_executor
from videoattn.utils.errors import OneLineError, UsageError


def add_slurm_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM (--executor slurm; --executor submitit-local runs the same job array here)")
    g.add_argument("--partition", default="", help="SLURM partition (required with --executor slurm)")
    g.add_argument("--time", type=int, default=0, help="time limit of each cell in minutes")
    g.add_argument("--gpus-per-cell", type=int, default=None, help="default: the grid's nproc (0: CPU cells)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs of each cell's SLURM task")
    for name in ("account", "qos", "mem", "constraint", "comment"):
        g.add_argument(f"--{name}", default="")
    g.add_argument("--signal-delay", type=int, default=120, help="seconds before the limit that SLURM sends SIGUSR1")
    g.add_argument("--max-timeouts", type=int, default=30, help="requeues per cell after the time limit")
    g.add_argument("--wait", action="store_true", help="wait for the array, then write the tables")


def _executor_args(args: argparse.Namespace, grid: Grid) -> argparse.Namespace:
    """The namespace videoattn.train.submit's executor functions take, for one task per cell."""
    local = args.executor == "submitit-local"
    gpus = grid.nproc if args.gpus_per_cell is None else args.gpus_per_cell
    if args.time < 1:
        raise UsageError(f"--time={args.time}: give each cell's time limit in minutes (>= 1)")
    if not local and not args.partition:
        raise UsageError("--partition is required with --executor slurm")
    if gpus < 0 or args.signal_delay >= 60 * args.time:
        raise UsageError(f"--gpus-per-cell={gpus} must be >= 0 and --signal-delay shorter than --time")
    if args.mem and not re.fullmatch(r"\d+[KMGT]?", args.mem, re.IGNORECASE):
        raise UsageError(f"--mem='{args.mem}': use sbatch's syntax, e.g. 480G, 64000M or 0")
    name = "ablate-" + os.path.splitext(os.path.basename(grid.path))[0]
    fields = {**vars(args), "job_name": name, "config": grid.path, "nodes": 1, "local": local, "gpus_per_node": gpus}
    return argparse.Namespace(**fields)


class CellTask:
    """The submitted callable: one cell, as the local runner runs it; submitit requeues it through
    :meth:`checkpoint` after SIGUSR1."""

    def __init__(self, job: CellJob, threads: Optional[int]) -> None:
        self.job, self.threads = job, threads

    def __call__(self) -> str:
        with StopSignals(extra=(signal.SIGUSR1,)) as stop:  # replaces submitit's handler while cells run
            outcome = run_cells([self.job], 1, child_env(self.threads), lambda s: print(s, flush=True), stop=stop)
        if outcome.stopped_by == signal.SIGUSR1:
            hand_over_to_submitit(0)  # submitit's handler: checkpoint(), requeue, exit
        if outcome.failed:
            raise RuntimeError(f"cell {self.job.cell.name} failed: {error_line(self.job.folder)}")
        if outcome.stopped_by:
            sys.exit(128 + outcome.stopped_by)
        return self.job.cell.name

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(CellTask(self.job, self.threads))


def submit_cells(
    args: argparse.Namespace, grid: Grid, out: str, jobs: List[CellJob], write_report: Callable[[], None]
) -> int:
    """Submit ``jobs`` as one array (``--jobs``: how many run at once on SLURM); with ``--wait`` (always
    with submitit-local) wait for them and write the tables. 1 if a cell failed."""
    ns = _executor_args(args, grid)
    if not jobs:
        write_report()
        return 0
    ex = make_executor(ns, 1, os.path.join(out, "slurm", "%j"))
    if not ns.local:
        ex.update_parameters(slurm_array_parallelism=args.jobs)
    try:
        with ex.batch():
            submitted = [ex.submit(CellTask(job, args.threads)) for job in jobs]
    except FileNotFoundError as e:  # srun but no sbatch here
        raise OneLineError(f"cannot submit to SLURM here ({e})") from None
    gpus = executor_parameters(ns, 1)["gpus_per_node"]
    ids = f"{submitted[0].job_id} .. {submitted[-1].job_id}"
    print(f"submitted {len(submitted)} cell(s) ({args.executor}, {gpus} GPU(s) each): jobs {ids}; logs in {out}/slurm")
    if not (ns.local or args.wait):
        print(f"when they have ended: tools/ablate.py {args.grid} --output {out} --report-only")
        return 0
    failed = 0
    for job, cell_job in zip(submitted, jobs):
        try:
            job.result()
        except Exception as e:  # submitit's FailedJobError / UncompletedJobError carry the remote error
            failed += 1
            print(f"{cell_job.cell.name}: FAILED: {failure_line(e)}", file=sys.stderr)
    write_report()
    return 1 if failed else 0
