"""tools/test_net.py and tools/extract_features.py started as 2 srun tasks (SLURM_* variables, no
torchrun): the launcher is detected and logged, the process group forms from the node list and the
job id, and the results equal a single process's. (Training under srun: test_preemption_resume.py.)
A task whose partner never comes says whom it waits for, stops on Ctrl-C and times out in one line."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from evalkit import check, run
from slurmkit import REPO, free_port_job_id, srun, srun_env

pytestmark = pytest.mark.slow


def _both(args):
    """(one process's CompletedProcess, [(status, stdout, stderr)] of 2 srun tasks) of ``args`` + output."""
    return check(run(args(1))), srun(args(2), ntasks=2)


def _ok(tasks):
    assert [rc for rc, _, _ in tasks] == [0, 0], "\n".join(e[-3000:] for _, _, e in tasks)
    assert "launcher srun: rank 0 of 2 (local rank 0), master localhost:" in tasks[0][1]


def test_test_net_as_srun_tasks_equals_one_process(setup):
    out = {n: str(setup["tmp"] / f"test{n}") for n in (1, 2)}
    one, two = _both(
        lambda n: ["tools/test_net.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"], f"output_dir={out[n]}"]
    )
    _ok(two)
    m1, m2 = (json.load(open(os.path.join(out[n], "test", "metrics.json"))) for n in (1, 2))
    assert m1.pop("world_size") == 1 and m2.pop("world_size") == 2
    assert m1 == m2 and m1["num_videos"] == 5
    assert "launcher single: rank 0 of 1" in one.stdout


def test_extract_features_as_srun_tasks_equals_one_process(setup):
    out = {n: str(setup["tmp"] / f"features{n}") for n in (1, 2)}
    _, two = _both(
        lambda n: [
            "tools/extract_features.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            setup["ckpt"],
            "--input",
            os.path.join(setup["data"]["root"], "val.csv"),
            "--output",
            out[n],
        ]
    )
    _ok(two)
    names = sorted(n for n in os.listdir(out[1]) if not n.startswith("."))
    assert names == sorted(n for n in os.listdir(out[2]) if not n.startswith("."))
    npy = [n for n in names if n.endswith(".npy")]
    assert len(npy) == 5
    for n in npy:
        np.testing.assert_allclose(np.load(os.path.join(out[1], n)), np.load(os.path.join(out[2], n)), atol=1e-5)
    assert open(os.path.join(out[1], "index.csv")).read() == open(os.path.join(out[2], "index.csv")).read()


# ------------------------------------------------------------------ one task of two: the other never comes
SYNTH_CFG = os.path.join(REPO, "configs", "synthetic", "C2D_R18.yaml")  # nothing is read before the rendezvous


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # even if the test runner was started with SIGINT ignored


def _alone(rank, args, job_id, **extra):
    """Task ``rank`` of 2 (the other one is never started) of ``python args...``."""
    env = srun_env(rank, 2, job_id, **extra)
    env.pop("SLURM_NTASKS_PER_NODE")  # one task here, as a plain 'python ...' in an sbatch script with --ntasks=2
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )


def _two_free_port_job_ids():
    first = free_port_job_id()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 10000 + int(first) % 20000))  # taken while the second one is chosen
        return first, free_port_job_id()


def _no_traceback(*texts):
    for text in texts:
        assert "Traceback" not in text and "DistStoreError" not in text, text[-3000:]


def test_one_of_two_srun_tasks_says_whom_it_waits_for_and_times_out_in_one_line(tmp_path):
    """Rank 0 alone (train_net) prints its launcher line, then 'waiting for 1 more process at
    ADDR:PORT' every VIDEOATTN_WAIT_REPORT_SECONDS, and ends after dist_timeout_minutes in one
    line; rank 1 alone (test_net: the same launch path) ends in one line naming rank 0's address."""
    jobs = _two_free_port_job_ids()
    port = 10000 + int(jobs[0]) % 20000
    out = tmp_path / "train"
    zero = _alone(
        0,
        ["tools/train_net.py", "--config", SYNTH_CFG, f"output_dir={out}", "device=cpu", "dist_timeout_minutes=0.1"],
        jobs[0],
        VIDEOATTN_WAIT_REPORT_SECONDS="1",
    )
    one = _alone(
        1,
        [
            "tools/test_net.py",
            "--config",
            SYNTH_CFG,
            f"output_dir={tmp_path / 'test'}",
            "device=cpu",
            "dist_timeout_minutes=0.1",
        ],
        jobs[1],
    )
    (o0, e0), (o1, e1) = zero.communicate(timeout=180), one.communicate(timeout=180)
    _no_traceback(o0, e0, o1, e1)
    lines = o0.strip().splitlines()
    assert zero.returncode == 1 and len(lines) >= 3, o0 + e0
    assert lines[0].endswith(f"launcher srun: rank 0 of 2 (local rank 0), master localhost:{port}, device cpu")
    waiting = [
        line
        for line in lines
        if f"waiting for 1 more process at localhost:{port} (1 of 2 here; missing: rank 1)" in line
    ]
    assert lines[1] in waiting and len(waiting) >= 3, o0  # at once, then every second for 6 s
    assert e0.strip().splitlines() == [e0.strip()], e0
    assert e0.startswith(
        f"error: rank 0 of 2: only 1 of 2 processes came to localhost:{port} within "
        "dist_timeout_minutes=0.1 (missing: rank 1); start one process per task with srun"
    ), e0
    assert not out.exists()  # nothing written
    port1 = 10000 + int(jobs[1]) % 20000
    assert one.returncode == 1 and re.fullmatch(
        rf"error: rank 1 of 2: nothing answered at localhost:{port1} \(rank "
        rf"0's rendezvous\) within dist_timeout_minutes=0\.1 \(.+\); was rank 0 "
        rf"started\?",
        e1.strip(),
    ), e1


def _wait_for_line(proc, pattern, timeout):
    """The first stdout line of ``proc`` that matches ``pattern``, read in a thread (None after ``timeout``)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if re.search(pattern, line):
            return line
    return None


def test_ctrl_c_while_waiting_for_the_other_srun_task_exits_at_once_in_one_line(tmp_path):
    """SIGINT to rank 0 of 2 while it waits (default 30-minute timeout) for rank 1: exit 130 within
    a few seconds, one line on stderr, no traceback."""
    job = free_port_job_id()
    proc = _alone(
        0,
        [
            "tools/extract_features.py",
            "--config",
            SYNTH_CFG,
            "--input",
            str(tmp_path / "videos"),
            "--output",
            str(tmp_path / "features"),
            "device=cpu",
        ],
        job,
    )
    try:
        seen = _wait_for_line(proc, r"waiting for 1 more process at localhost:\d+", timeout=120)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        try:
            proc.wait(timeout=20)
            took = time.monotonic() - start
        except subprocess.TimeoutExpired:
            took = float("inf")
    finally:
        proc.kill()
    stderr = proc.stderr.read()
    assert took < 5, f"still running {took:.1f} s after SIGINT"
    assert seen, "no 'waiting for 1 more process' line within 120 s"
    _no_traceback(stderr)
    assert proc.returncode == 130, (proc.returncode, stderr)
    port = 10000 + int(job) % 20000
    assert stderr.strip() == (
        f"interrupted while waiting for the other processes at localhost:{port}; nothing was written"
    ), stderr
    assert not (tmp_path / "features").exists()
