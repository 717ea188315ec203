"""Run by tests/engine/test_submit.py (not a test itself):

    submit_requeue_driver.py OUT_DIR CONFIG

``videoattn.train.submit.main --local`` (the code path of tools/submit.py) with a stand-in
training entry point on 2 tasks: on the first run rank 1 sends itself a real SIGUSR1 at iteration
3; both ranks agree to stop (PreemptionHandler) and return 75, rank 0 after writing a marker (the
checkpoint's stand-in). TrainJob then hands the signal to submitit, which requeues the job; the
second run sees the marker and finishes. Each run writes OUT_DIR/run<k>_rank<r>.json.
"""

import sys

from videoattn.train.submit import main


def entry(argv):
    """Runs in each submitit task (pickled by value, being defined in __main__)."""
    import datetime
    import json
    import os
    import signal

    import torch
    import torch.distributed as dist

    from videoattn.utils.io import atomic_write_text
    from videoattn.utils.preemption import PreemptionHandler

    out = next(a.split("=", 1)[1] for a in argv if a.startswith("output_dir="))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # env:// from TrainJob
    rank = dist.get_rank()
    marker = os.path.join(out, "stopped.json")
    run = 2 if os.path.exists(marker) else 1
    stop_at = None
    with PreemptionHandler() as pre:
        for it in range(200 if run == 1 else 5):
            t = torch.ones(1)
            dist.all_reduce(t)
            if run == 1 and rank == 1 and it == 3:
                os.kill(os.getpid(), signal.SIGUSR1)
            if pre.should_stop():
                stop_at = it
                break
    if rank == 0 and stop_at is not None:
        atomic_write_text(marker, json.dumps({"stop_at": stop_at}))
    env = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    atomic_write_text(
        os.path.join(out, f"run{run}_rank{rank}.json"),
        json.dumps(
            {"stop_at": stop_at, "received": pre.received, "exit_code": pre.exit_code, "env": env, "argv": argv}
        ),
    )
    dist.barrier()
    dist.destroy_process_group()
    return pre.exit_code


if __name__ == "__main__":
    out_dir, config = sys.argv[1], sys.argv[2]
    sys.exit(
        main(
            [
                "--config",
                config,
                "--local",
                "--gpus-per-node",
                "0",
                "--tasks-per-node",
                "2",
                "--time",
                "10",
                f"output_dir={out_dir}",
                "device=cpu",
            ],
            entry=entry,
        )
    )
