"""``tools/submit.py``: submit training to SLURM through submitit (or run it here with ``--local``).

    python tools/submit.py --config CFG --nodes 2 --gpus-per-node 8 --partition gpu --time 4320 \\
        [--account A --qos Q --mem 480G --cpus-per-task 10 --constraint volta32gb --comment C] [key=value ...]

One task per GPU (``tasks_per_node = gpus_per_node``); each task runs :class:`TrainJob`, which
turns the launcher's variables (``SLURM_*`` under SLURM, ``SUBMITIT_LOCAL_*`` locally) into
torch.distributed's ``env://`` variables (:mod:`videoattn.utils.launcher`) and runs the training of
``tools/train_net.py`` (:func:`run_training`) with ``--config CFG key=value ... output_dir=ABS``.
The submitit folder (job script, pickles, one ``<job>_<task>_log.out/.err`` per task) is ``output_dir/slurm/<job id>/``.

Time limit and preemption: SLURM sends SIGUSR1 ``--signal-delay`` seconds (default 120) before
the limit (``#SBATCH --signal=USR1@120``; this tool sets ``SUBMITIT_PREEMPT_SIGNAL=USR1`` so that
submitit uses the same signal as a plain ``sbatch`` script). When the training entry point returns
``REQUEUE_EXIT_CODE`` (it stopped on that signal with a checkpoint written, see
:mod:`videoattn.utils.preemption`), rank 0 hands the signal on to submitit's handler: it calls
:meth:`TrainJob.checkpoint` (the same callable), runs ``scontrol requeue`` and exits; the requeued job
starts the same training, which auto-resumes from ``output_dir``. A training entry point that does
not stop on the signal itself is requeued by submitit directly (from its last checkpoint).
``output_dir`` must be on a file system that every node shares.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
from typing import Callable, List, Optional, Sequence

from videoattn.config import ConfigError, load_config
from videoattn.engine.device import expand_preset
from videoattn.train.loop import train
from videoattn.utils.distributed import per_process_batch
from videoattn.utils.errors import OneLineError, UsageError
from videoattn.utils.launcher import detect_launcher, export_env
from videoattn.utils.preemption import REQUEUE_EXIT_CODE

PREEMPT_SIGNAL = "USR1"
Entry = Callable[[List[str]], int]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Submit training to SLURM with submitit (one task per GPU); "
        "--local runs the same job on this machine.",
        epilog="Trailing key=value pairs override config keys, as for tools/train_net.py.",
    )
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per node (0: CPU tasks, gloo)")
    p.add_argument("--tasks-per-node", type=int, default=None, help="default: --gpus-per-node (1 without GPUs)")
    p.add_argument("--partition", default="", help="SLURM partition (required unless --local)")
    p.add_argument("--time", type=int, required=True, help="time limit in minutes")
    p.add_argument("--account", default="")
    p.add_argument("--qos", default="")
    p.add_argument("--mem", default="", help="memory per node, sbatch syntax (e.g. 480G; 0 = all)")
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--constraint", default="")
    p.add_argument("--comment", default="")
    p.add_argument("--job-name", default="", help="default: the config file's name")
    p.add_argument(
        "--signal-delay",
        type=int,
        default=120,
        help="seconds before the time limit at which SLURM sends SIGUSR1 (default 120)",
    )
    p.add_argument(
        "--max-timeouts",
        type=int,
        default=30,
        help="how many times the job may hit its time limit and requeue itself (default 30)",
    )
    p.add_argument("--local", action="store_true", help="run here with submitit's local executor and wait")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish (always with --local)")
    p.add_argument("opts", nargs="*", default=[], help="key=value config overrides")
    return p


def check_args(args: argparse.Namespace) -> int:
    """Validate the resources; returns tasks per node. Raises ValueError with a one-line message."""
    tasks = args.tasks_per_node if args.tasks_per_node is not None else max(1, args.gpus_per_node)
    for name, value, low in (
        ("--nodes", args.nodes, 1),
        ("--gpus-per-node", args.gpus_per_node, 0),
        ("--tasks-per-node", tasks, 1),
        ("--time", args.time, 1),
        ("--signal-delay", args.signal_delay, 0),
        ("--max-timeouts", args.max_timeouts, 0),
    ):
        if value < low:
            raise UsageError(f"{name}={value} must be >= {low}")
    if args.cpus_per_task is not None and args.cpus_per_task < 1:
        raise UsageError(f"--cpus-per-task={args.cpus_per_task} must be >= 1")
    if args.gpus_per_node and tasks != args.gpus_per_node:
        raise UsageError(f"--tasks-per-node={tasks} must equal --gpus-per-node={args.gpus_per_node} (one task per GPU)")
    if args.signal_delay >= 60 * args.time:
        raise UsageError(f"--signal-delay={args.signal_delay}s must be shorter than --time={args.time} min")
    if args.mem and not re.fullmatch(r"\d+[KMGT]?", args.mem, re.IGNORECASE):
        raise UsageError(f"--mem='{args.mem}': use sbatch's syntax, e.g. 480G, 64000M or 0")
    if args.local and args.nodes != 1:
        raise UsageError("--local runs on this machine: use --nodes 1")
    if not args.local and not args.partition:
        raise UsageError("--partition is required (or --local to run here)")
    return tasks


def job_argv(args: argparse.Namespace, output_dir: str) -> List[str]:
    """The training entry point's argv: absolute config path, the overrides, absolute output_dir."""
    return ["--config", os.path.abspath(args.config), *args.opts, f"output_dir={output_dir}"]


def run_training(argv: Sequence[str]) -> int:
    """The job's default entry point: ``tools/train_net.py``'s training for ``argv`` (``--config CFG
    key=value ...``) in this task. Returns 0, or 75 / 143 when it stopped on a signal with a
    checkpoint written; an error is raised (submitit reports it to the submitter)."""
    config, overrides = argv[1], list(argv[2:])
    return train(load_config(config, overrides)).exit_code  # the run's session expands the preset


class TrainJob:
    """The submitted callable, run once per task; submitit requeues it through :meth:`checkpoint`.

    ``entry``: the training entry point ``entry(argv) -> exit status`` (default
    :func:`run_training`); a test passes its own.
    """

    def __init__(self, argv: Sequence[str], entry: Optional[Entry] = None) -> None:
        self.argv = list(argv)
        self.entry = entry

    def __call__(self) -> int:
        info = detect_launcher()
        export_env(info)
        print(info.describe(), flush=True)
        status = (self.entry or run_training)(list(self.argv))
        if status == REQUEUE_EXIT_CODE:
            hand_over_to_submitit(info.rank)
        if status:
            if status == 1:  # the entry point printed the error
                raise RuntimeError(f"training failed (exit status 1) on rank {info.rank}; see this task's log")
            sys.exit(status)  # stopped on a signal: no result file, the job is not finished
        return status

    def checkpoint(self, *args, **kwargs):
        """Called by submitit (rank 0) before it requeues: resubmit the same training."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrainJob(self.argv, self.entry))


def hand_over_to_submitit(rank: int) -> None:
    """After the training stopped on the preemption signal with a checkpoint written (all ranks
    agreed), give rank 0's signal to submitit's handler: checkpoint(), requeue, exit."""
    import submitit

    sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
    if rank == 0 and callable(signal.getsignal(sig)):
        os.kill(os.getpid(), sig)  # the handler runs before the next statement and exits the process


def executor_parameters(args: argparse.Namespace, tasks: int) -> dict:
    """The AutoExecutor parameters: submitit's generic names plus ``slurm_*`` ones (sbatch options)."""
    params = dict(
        name=args.job_name or os.path.splitext(os.path.basename(args.config))[0],
        timeout_min=args.time,
        nodes=args.nodes,
        tasks_per_node=tasks,
        gpus_per_node=args.gpus_per_node,
    )
    if args.cpus_per_task:
        params["cpus_per_task"] = args.cpus_per_task
    if not args.local:
        params.update(
            slurm_partition=args.partition,
            slurm_signal_delay_s=args.signal_delay,
            slurm_setup=[f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}"],
            slurm_additional_parameters={"requeue": True},
        )
        params.update(
            {f"slurm_{k}": v for k in ("account", "qos", "mem", "constraint", "comment") if (v := getattr(args, k))}
        )
    return params


def import_submitit():
    """submitit, set to use SIGUSR1 (``SUBMITIT_PREEMPT_SIGNAL``, read once, when submitit is imported;
    the job inherits it, and the sbatch script exports it too)."""
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = PREEMPT_SIGNAL
    import submitit

    if submitit.JobEnvironment.USR_SIG != PREEMPT_SIGNAL:
        raise RuntimeError(f"submitit was imported before SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL} was set")
    return submitit


def make_executor(args: argparse.Namespace, tasks: int, folder: str):
    """A submitit AutoExecutor (``cluster="local"`` with ``--local``) with this job's resources."""
    submitit = import_submitit()
    try:
        ex = submitit.AutoExecutor(
            folder,
            cluster="local" if args.local else "slurm",
            slurm_max_num_timeout=args.max_timeouts,
            local_max_num_timeout=args.max_timeouts,
        )
    except RuntimeError as e:  # no srun on this machine
        raise OneLineError(f"cannot submit to SLURM here ({e}); use --local to run on this machine") from None
    ex.update_parameters(**executor_parameters(args, tasks))
    return ex


def submit(args: argparse.Namespace, tasks: int, output_dir: str, entry: Optional[Entry] = None):
    """Submit :class:`TrainJob`; returns the submitit job."""
    ex = make_executor(args, tasks, os.path.join(output_dir, "slurm", "%j"))
    try:
        return ex.submit(TrainJob(job_argv(args, output_dir), entry))
    except FileNotFoundError as e:  # srun but no sbatch here
        raise OneLineError(f"cannot submit to SLURM here ({e}); use --local to run on this machine") from None


def load_output_dir(args: argparse.Namespace, tasks: int) -> str:
    """Load the config as the job will (a bad key fails here, not in the queue); absolute output_dir."""
    cfg = load_config(args.config, args.opts)
    expand_preset(cfg)  # an unknown model.preset fails here too
    per_process_batch(cfg.train.batch_size, "train.batch_size", args.nodes * tasks)
    return os.path.abspath(cfg.output_dir)


def main(argv: Optional[Sequence[str]] = None, entry: Optional[Entry] = None) -> int:
    """Submit (and with ``--local``/``--wait`` wait for) the job; 1 with a one-line error."""
    args = build_parser().parse_args(argv)
    try:
        tasks = check_args(args)
        output_dir = load_output_dir(args, tasks)
        job = submit(args, tasks, output_dir, entry)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 1
    except OneLineError as e:  # bad arguments or config values, no SLURM here, a locked output_dir
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"submitted job {job.job_id} ({'local' if args.local else 'slurm'}): {args.nodes} node(s) x "
        f"{tasks} task(s), output_dir {output_dir}"
    )
    print(f"logs: {job.paths.stdout} {job.paths.stderr} (one pair per task in {job.paths.folder})", flush=True)
    if not (args.local or args.wait):
        return 0
    status = _wait(job)
    if args.local:  # submitit's local controller also creates the unexpanded folder '%j'
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(output_dir, "slurm", "%j"))
    return status


def failure_line(e: Exception) -> str:
    """One line from submitit's multi-line errors: the remote exception (the last line of the trace
    that FailedJobError holds between two dashed rules), else the first two lines."""
    parts = str(e).split("-" * 22)
    if len(parts) >= 3:
        lines = [line.strip() for line in parts[1].splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return " ".join([line.strip() for line in str(e).splitlines() if line.strip()][:2]) or type(e).__name__


def _wait(job) -> int:
    """Wait for every task; 0 on success, else 1 with the first line of the failure."""
    try:
        job.results()
    except Exception as e:  # submitit's FailedJobError / UncompletedJobError carry the remote error
        print(f"error: job {job.job_id} failed: {failure_line(e)} (see {job.paths.stderr})", file=sys.stderr)
        return 1
    print(f"job {job.job_id} finished")
    return 0
