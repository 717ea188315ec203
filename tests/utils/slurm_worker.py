"""Started by tests/utils/test_launcher.py and test_preemption.py with srun's SLURM_* variables and no
torchrun variables (not a test itself).

    slurm_worker.py allreduce OUT                 launcher -> env:// -> gloo; all-reduce; OUT/rank<r>.json
    slurm_worker.py preempt OUT MAX_ITERS         iterate until PreemptionHandler.should_stop(); OUT/rank<r>.json;
                                                  exits with the agreed exit code
"""

import datetime
import json
import os
import signal
import sys
import time

import torch
import torch.distributed as dist

from videoattn.utils.io import atomic_write_text
from videoattn.utils.launcher import LauncherError, detect_launcher, export_env
from videoattn.utils.preemption import PreemptionHandler

ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def setup():
    try:
        info = detect_launcher(check_gpus=False)
    except LauncherError as e:
        sys.exit(f"launcher error: {e}")
    export_env(info)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # env://
    return info


def allreduce(out: str) -> None:
    info = setup()
    t = torch.tensor([1.0, 10.0]) * (info.rank + 1)
    dist.all_reduce(t)
    report = {
        "launcher": info.launcher,
        "rank": info.rank,
        "world_size": info.world_size,
        "local_rank": info.local_rank,
        "dist_rank": dist.get_rank(),
        "dist_world_size": dist.get_world_size(),
        "env": {k: os.environ[k] for k in ENV_KEYS},
        "sum": t.tolist(),
    }
    dist.destroy_process_group()
    atomic_write_text(os.path.join(out, f"rank{info.rank}.json"), json.dumps(report))


def preempt(out: str, max_iters: int) -> int:
    """Iterate (a small all-reduce of 'work' each time) until the ranks agree to stop. The test
    signals one rank's pid, read from OUT/progress<r>.json, once that rank is past iteration 3."""
    info = setup()
    first_seen = stop_at = None
    work = torch.zeros(1)
    with PreemptionHandler() as pre:
        for it in range(max_iters):
            step = torch.ones(1)
            dist.all_reduce(step)
            work += step
            time.sleep(0.01)
            atomic_write_text(
                os.path.join(out, f"progress{info.rank}.json"), json.dumps({"pid": os.getpid(), "iteration": it})
            )
            if first_seen is None and pre.requested:
                first_seen = it
            if pre.should_stop():
                stop_at = it
                first_seen = it if first_seen is None else first_seen  # it landed between the two checks
                break
    report = {
        "rank": info.rank,
        "stop_at": stop_at,
        "first_seen": first_seen,
        "received": pre.received,
        "exit_code": pre.exit_code,
        "work": work.item(),
        "usr1_after": str(signal.getsignal(signal.SIGUSR1)),
        "term_after": str(signal.getsignal(signal.SIGTERM)),
    }
    dist.destroy_process_group()
    atomic_write_text(os.path.join(out, f"rank{info.rank}.json"), json.dumps(report))
    return pre.exit_code


if __name__ == "__main__":
    if sys.argv[1] == "allreduce":
        allreduce(sys.argv[2])
    else:
        sys.exit(preempt(sys.argv[2], int(sys.argv[3])))
