"""Start processes the way ``srun`` starts a job step's tasks on one node: each with SLURM's
variables (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, the node lists, the job id) and no
torchrun variables. Test helper, not part of the library."""

import os
import random
import socket
import subprocess
import sys
from typing import List, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK")


def free_port_job_id() -> str:
    """A job id whose derived port (10000 + id % 20000) is free here now. The scan starts at a random
    port: the xdist workers' pids are adjacent, and scans from ``pid % 19000`` could meet on one
    port (one test's ranks then join the other test's rendezvous and both wait until they time out)."""
    start = random.SystemRandom().randrange(20000)
    for offset in range(20000):
        port = 10000 + (start + offset) % 20000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(port - 10000 + 20000 * 37)
    raise RuntimeError("no free port")


def clean_env(**extra) -> dict:
    """This environment minus every launcher variable, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCHER_VARS and not k.startswith(("SLURM_", "SUBMITIT_", "TORCHELASTIC_"))
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=REPO, **extra)
    return env


def srun_env(rank: int, ntasks: int, job_id: str, **extra) -> dict:
    """The environment of task ``rank`` of ``ntasks`` on one node (``localhost``)."""
    slurm = dict(
        SLURM_PROCID=str(rank),
        SLURM_NTASKS=str(ntasks),
        SLURM_LOCALID=str(rank),
        SLURM_NODEID="0",
        SLURM_JOB_ID=job_id,
        SLURM_JOB_NODELIST="localhost",
        SLURM_STEP_NODELIST="localhost",
        SLURM_NTASKS_PER_NODE=str(ntasks),
    )
    return clean_env(**{**slurm, **extra})


def start_tasks(args: Sequence[str], ntasks: int = 2, job_id: str = "", **extra) -> List[subprocess.Popen]:
    """``python args...`` as ``ntasks`` srun tasks (stdout/stderr piped, text)."""
    job_id = job_id or free_port_job_id()
    return [
        subprocess.Popen(
            [sys.executable, *map(str, args)],
            env=srun_env(rank, ntasks, job_id, **extra),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(ntasks)
    ]


def finish(procs: Sequence[subprocess.Popen], timeout: float = 300) -> List[Tuple[int, str, str]]:
    """``[(exit status, stdout, stderr)]`` of every task; all are killed if one overruns."""
    outs = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, o, e))
    return outs


def srun(args: Sequence[str], ntasks: int = 2, timeout: float = 300, **extra) -> List[Tuple[int, str, str]]:
    return finish(start_tasks(args, ntasks, **extra), timeout)
