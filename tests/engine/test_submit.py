"""tools/submit.py: submitit's local executor runs the real training (2 tasks, gloo) and the
requeue hand-over; the sbatch script submitit would write; one-line usage errors."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from ddp_worker import small_overrides

from videoattn.engine import checkpoint as ck

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")


def job_env() -> dict:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "SUBMITIT_"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def run(cmd, timeout=420):
    return subprocess.run(
        [sys.executable, *cmd], capture_output=True, text=True, timeout=timeout, env=job_env(), cwd=REPO
    )


def submit_local(*overrides):
    return run(
        [
            os.path.join(REPO, "tools", "submit.py"),
            "--config",
            CONFIG,
            "--local",
            "--gpus-per-node",
            "0",
            "--tasks-per-node",
            "2",
            "--time",
            "20",
            *overrides,
        ]
    )


def job_id_of(proc) -> str:
    return proc.stdout.split("submitted job ")[1].split()[0]


def task_logs(out: str, task: int, job: str = "") -> str:
    """Everything task ``task`` of ``job`` (default: the only job) wrote, stdout + stderr, every run."""
    job = job or os.path.basename(glob.glob(os.path.join(out, "slurm", "[0-9]*"))[0])
    folder = os.path.join(out, "slurm", job)
    return "".join(open(os.path.join(folder, f"{job}_{task}_log.{k}")).read() for k in ("out", "err"))


@pytest.mark.slow
def test_submit_local_trains_and_a_new_submission_resumes(synthetic_root, tmp_path):
    out = str(tmp_path / "out")
    proc = submit_local(*small_overrides(synthetic_root, out, "solver.max_epoch=1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = job_id_of(proc)
    folder = os.path.join(out, "slurm", job_id)
    assert f"logs: {folder}/{job_id}_0_log.out {folder}/{job_id}_0_log.err" in proc.stdout
    assert f"job {job_id} finished" in proc.stdout
    assert sorted(os.listdir(os.path.join(out, "slurm"))) == [job_id]
    assert {f"{job_id}_{t}_log.{k}" for t in (0, 1) for k in ("out", "err")} <= set(os.listdir(folder))
    final = ck.load_checkpoint(ck.epoch_checkpoint_path(out, 1))
    assert final["epoch"] == 0 and final["world_size"] == 2 and len(final["rng_state"]) == 2  # 2 DDP ranks
    log0, log1 = task_logs(out, 0, job_id), task_logs(out, 1, job_id)
    assert "launcher submitit-local: rank 0 of 2 (local rank 0), master 127.0.0.1:" in log0
    assert "launcher submitit-local: rank 1 of 2 (local rank 1)" in log1
    assert "epoch 1: train loss" in log0 and "Job completed successfully" in log1
    # The same command with more epochs (what a requeued job runs) resumes from output_dir.
    proc = submit_local(*small_overrides(synthetic_root, out, "solver.max_epoch=2"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "checkpoint_epoch_00001.pyth (epoch 1 done" in task_logs(out, 0, job_id_of(proc))
    resumed = ck.load_checkpoint(ck.epoch_checkpoint_path(out, 2))
    assert resumed["global_step"] == 2 * 3  # 24 videos / batch 8 = 3 updates per epoch
    assert not torch.equal(resumed["model_state"]["head.proj.weight"], final["model_state"]["head.proj.weight"])


@pytest.mark.slow
def test_requeue_after_an_agreed_stop_goes_through_submitit(tmp_path):
    """Rank 1 gets a real SIGUSR1; both ranks stop at the same iteration and return 75; rank 0 hands
    the signal to submitit's handler, which calls TrainJob.checkpoint() and requeues (the local
    controller reruns the job); the second run finishes."""
    out = str(tmp_path / "rq")
    proc = run([os.path.join(HERE, "submit_requeue_driver.py"), out, CONFIG])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = {(k, rank): json.load(open(os.path.join(out, f"run{k}_rank{rank}.json"))) for k in (1, 2) for rank in (0, 1)}
    assert r[1, 0]["stop_at"] == r[1, 1]["stop_at"] == 3
    assert r[1, 1]["received"] == 10 and r[1, 0]["received"] is None  # SIGUSR1, on rank 1 only
    assert r[1, 0]["exit_code"] == r[1, 1]["exit_code"] == 75
    assert r[2, 0]["stop_at"] is None and r[2, 0]["exit_code"] == r[2, 1]["exit_code"] == 0
    assert r[1, 1]["env"]["RANK"] == "1" and r[1, 1]["env"]["WORLD_SIZE"] == "2"
    assert r[2, 1]["argv"][-1] == f"output_dir={out}"  # the requeued callable got the same arguments
    log0, log1 = task_logs(out, 0), task_logs(out, 1)
    assert "Caught signal SIGUSR1" in log0 and "Calling checkpoint method." in log0 and "Requeued job" in log0
    assert "Caught signal" not in log1  # while PreemptionHandler was installed, submitit's handler was not called
    assert log0.count("launcher submitit-local: rank 0 of 2") == 2 and log1.count("Job completed successfully") == 1


@pytest.mark.slow
def test_sbatch_script_asks_for_usr1_before_the_limit_and_one_task_per_gpu(tmp_path):
    """The parameters, through submitit's own sbatch writer (no srun here to build a SlurmExecutor)."""
    code = f"""
import argparse, sys
from videoattn.train.submit import build_parser, check_args, executor_parameters, import_submitit
import_submitit()  # before submitit.slurm: the signal is chosen at import
from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string
args = build_parser().parse_args(sys.argv[1:])
params = executor_parameters(args, check_args(args))
eq = SlurmExecutor._equivalence_dict()
sb = {{eq.get(k, k): v for k, v in params.items() if not k.startswith("slurm_")}}
sb.update({{k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")}})
print(_make_sbatch_string(command="python -m submitit.core._submit F", folder={str(tmp_path)!r}, **sb))
"""
    proc = run(
        [
            "-c",
            code,
            "--config",
            CONFIG,
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--partition",
            "gpu",
            "--time",
            "4320",
            "--account",
            "acc",
            "--qos",
            "high",
            "--mem",
            "480G",
            "--cpus-per-task",
            "10",
            "--constraint",
            "volta32gb",
            "--comment",
            "ddl 5/1",
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = set(proc.stdout.splitlines())
    expected = [
        "#SBATCH --signal=USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=4320",
        "#SBATCH --account=acc",
        "#SBATCH --qos=high",
        "#SBATCH --mem=480G",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --constraint=volta32gb",
        "#SBATCH --comment='ddl 5/1'",
        "#SBATCH --job-name=I3D_NL_CBAM_R18",
        "export SUBMITIT_PREEMPT_SIGNAL=USR1",
    ]
    assert [e for e in expected if e not in lines] == []


@pytest.mark.parametrize(
    "args,message",
    [
        (["--time", "60"], "error: --partition is required (or --local to run here)"),
        (["--time", "60", "--local", "--nodes", "2"], "error: --local runs on this machine: use --nodes 1"),
        (
            ["--time", "60", "--local", "--gpus-per-node", "2", "--tasks-per-node", "3"],
            "error: --tasks-per-node=3 must equal --gpus-per-node=2 (one task per GPU)",
        ),
        (["--time", "1", "--local"], "error: --signal-delay=120s must be shorter than --time=1 min"),
        (["--time", "60", "--local", "--nodes", "0"], "error: --nodes=0 must be >= 1"),
        (
            ["--time", "60", "--partition", "p", "--mem", "lots"],
            "error: --mem='lots': use sbatch's syntax, e.g. 480G, 64000M or 0",
        ),
        (
            ["--time", "60", "--local", "--gpus-per-node", "0", "--tasks-per-node", "3"],
            "error: train.batch_size=16 is the global batch and must be a positive multiple of the number of "
            "processes (3)",
        ),
        (["--time", "60", "--local", "solver.no_such_key=1"], "config error:"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    """Checked before submitit is set up or anything is written (in-process: cheap)."""
    from videoattn.train.submit import main

    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert main(["--config", CONFIG, *args, f"output_dir={tmp_path}/o"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
    assert not os.path.exists(tmp_path / "o")  # nothing submitted, nothing written
    assert "SUBMITIT_PREEMPT_SIGNAL" not in os.environ  # import_submitit() was not reached


@pytest.mark.slow
def test_no_slurm_here_is_a_one_line_error_from_the_tool(tmp_path):
    proc = run(
        [
            os.path.join(REPO, "tools", "submit.py"),
            "--config",
            CONFIG,
            "--time",
            "60",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--partition",
            "p",
            f"output_dir={tmp_path}/o",
        ],
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'error: cannot submit to SLURM here (Could not detect "srun", are you indeed on a slurm cluster?); '
        "use --local to run on this machine"
    ]
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.slow
def test_a_failing_job_is_one_line_naming_the_remote_error(tmp_path):
    out = tmp_path / "bad"
    proc = run(
        [
            os.path.join(REPO, "tools", "submit.py"),
            "--config",
            CONFIG,
            "--local",
            "--gpus-per-node",
            "0",
            "--tasks-per-node",
            "1",
            "--time",
            "10",
            f"output_dir={out}",
            f"data.root={tmp_path}/missing",
            "device=cpu",
            "train.batch_size=8",
        ]
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert (
        line.startswith(
            f"error: job {job_id_of(proc)} failed: videoattn.utils.errors.InputNotFound: annotation "
            "file or folder not found: "
        )
        and "missing/train.csv" in line
    )
