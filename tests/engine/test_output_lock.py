"""One run per output folder (videoattn/utils/lock.py): two real train_net runs (the second started
while the first holds the folder), stale and foreign-host locks, torchrun (rank 0 locks, every rank
reports), test_net's and extract_features' folders, and the lock's own races (takeover by several
processes at once, pid reuse)."""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from ddp_worker import small_overrides
from evalkit import run

from videoattn.config import config_to_dict, load_config
from videoattn.engine import checkpoint as ck
from videoattn.engine.device import for_device
from videoattn.utils.lock import LOCK_NAME, LockError, acquire, folder_lock, process_start, read_lock, release

pytestmark = pytest.mark.slow  # real tool processes contending for folders

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def _train(root, out, *extra):
    overrides = small_overrides(root, out, "train.checkpoint_period=1", "train.keep_last=0", *extra)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config", CFG, *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=REPO,
    )
    return proc, overrides


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(folder, **fields):
    os.makedirs(folder, exist_ok=True)
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": "",
        "started": "2020-01-01T00:00:00",
        "command": "tools/train_net.py --config old.yaml",
        "token": "t0",
    }
    record.update(fields)
    with open(os.path.join(folder, LOCK_NAME), "w") as f:
        json.dump(record, f)
    return record


def _wait_for(path: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if not os.path.exists(path):
        proc.kill()
        raise AssertionError(f"{path} never appeared (exit {proc.wait()})")


def test_two_train_runs_in_one_output_dir_one_wins(synthetic_root, tmp_path):
    """The second run starts while the first holds the folder, whatever the machine's speed: the
    first is paused (SIGSTOP, alive) from the moment its lock exists until the second has ended
    (issue 19.18: it used to start 0.5 s later and hope the first was still running)."""
    out = str(tmp_path / "out")
    epochs = 3
    first, ov_first = _train(synthetic_root, out, "seed=1", f"solver.max_epoch={epochs}")
    _wait_for(os.path.join(out, LOCK_NAME), first)
    first.send_signal(signal.SIGSTOP)
    try:
        second, ov_second = _train(synthetic_root, out, "seed=2", f"solver.max_epoch={epochs}")
        results = {"second": (second, ov_second, *second.communicate(timeout=300))}
    finally:
        first.send_signal(signal.SIGCONT)
    results["first"] = (first, ov_first, *first.communicate(timeout=300))
    winners = [r for r in results.values() if r[0].returncode == 0]
    losers = [r for r in results.values() if r[0].returncode != 0]
    assert len(winners) == 1 and len(losers) == 1, [(r[0].returncode, r[3][-2000:]) for r in results.values()]
    (win, win_ov, _, _), (_, _, lose_out, lose_err) = winners[0], losers[0]
    # The loser: one line naming the holder (host, pid, since when, command), nothing else.
    assert len(_lines(lose_err)) == 1, lose_err
    line = lose_err.strip()
    assert line.startswith(f"error: output folder {out} is in use by another run")
    assert f"host {socket.gethostname()}, pid {win.pid}, since " in line and "train_net.py" in line
    assert "training on" not in lose_out
    # The winner's files are its own and whole.
    cfg = for_device(load_config(CFG, win_ov), torch.device("cpu"))  # the config as the run saved it
    assert config_to_dict(load_config(os.path.join(out, "config.yaml"))) == config_to_dict(cfg)
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == list(range(1, epochs + 1))
    for _, path in ck.list_epoch_checkpoints(out):
        assert ck.load_checkpoint(path)["config"]["seed"] == cfg.seed
    rows = [json.loads(r) for r in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == list(range(1, epochs + 1))
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    log = open(os.path.join(out, "train.log")).read()
    assert log.count("training on") == 1 and log.count(f"epoch {epochs}: train loss") == 1
    assert not os.path.exists(os.path.join(out, LOCK_NAME))  # released at the end


def test_stale_lock_on_this_host_is_taken_over(synthetic_root, tmp_path):
    out = str(tmp_path / "out")
    _write_lock(out, pid=_dead_pid())  # a run killed with SIGKILL
    proc, _ = _train(synthetic_root, out, "solver.max_epoch=1")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "took over the stale lock" in stdout and "tools/train_net.py --config old.yaml" in stdout
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [1]
    assert not os.path.exists(os.path.join(out, LOCK_NAME))


def test_lock_of_another_host_is_refused(synthetic_root, tmp_path):
    out = str(tmp_path / "out")
    record = _write_lock(out, host="gpu-node-17", pid=_dead_pid())
    proc, _ = _train(synthetic_root, out, "solver.max_epoch=1")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and len(_lines(stderr)) == 1, stderr
    assert "locked by a run on another host (host gpu-node-17, pid" in stderr and "cannot tell" in stderr
    assert f"If you are sure it has ended, delete {os.path.join(out, LOCK_NAME)}" in stderr
    assert sorted(os.listdir(out)) == [LOCK_NAME] and read_lock(os.path.join(out, LOCK_NAME)) == record


def test_torchrun_rank0_locks_and_every_rank_reports(synthetic_root, tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    with folder_lock(out):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            os.path.join(REPO, "tools", "train_net.py"),
            "--config",
            CFG,
            *small_overrides(synthetic_root, out, "solver.max_epoch=1"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0] == errors[1], proc.stderr[-3000:]  # the same line on both ranks
    assert f"is in use by another run (host {socket.gethostname()}, pid {os.getpid()}" in errors[0]
    assert "Traceback" not in proc.stdout and sorted(os.listdir(out)) == []


def test_test_net_and_extract_features_lock_their_folders(setup):
    s = setup
    out, feats = str(s["tmp"] / "out"), str(s["tmp"] / "features")
    test_args = ["tools/test_net.py", "--config", s["cfg"], "--checkpoint", s["ckpt"], f"output_dir={out}"]
    extract_args = [
        "tools/extract_features.py",
        "--config",
        s["cfg"],
        "--checkpoint",
        s["ckpt"],
        "--input",
        os.path.join(s["data"]["root"], "val.csv"),
        "--output",
        feats,
    ]
    for args, folder in ((test_args, os.path.join(out, "test")), (extract_args, feats)):
        os.makedirs(folder)
        with folder_lock(folder):
            proc = run(args)
        assert proc.returncode == 1 and len(_lines(proc.stderr)) == 1, proc.stderr[-3000:]
        assert proc.stderr.startswith(
            f"error: output folder {folder} is in use by another run (host "
            f"{socket.gethostname()}, pid {os.getpid()}, since "
        )
        assert os.listdir(folder) == []  # nothing written
    assert os.listdir(out) == ["test"]
    proc = run(test_args)  # free again: the tool runs
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.exists(os.path.join(out, "test", "metrics.json"))
    assert not os.path.exists(os.path.join(out, "test", LOCK_NAME))


# --- the lock itself -----------------------------------------------------------------------------


def test_pid_reused_by_another_process_counts_as_gone(tmp_path):
    folder = str(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # The recorded pid is alive, but it is not the process that took the lock.
        _write_lock(folder, pid=sleeper.pid, process_start=process_start(sleeper.pid) + "0")
        with folder_lock(folder) as mine:
            assert read_lock(os.path.join(folder, LOCK_NAME))["token"] == mine["token"]
        # The same pid with its real start time is a live holder.
        _write_lock(folder, pid=sleeper.pid, process_start=process_start(sleeper.pid))
        with pytest.raises(LockError, match=f"in use by another run .*pid {sleeper.pid}, since 2020-01-01"):
            acquire(folder)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_from_another_pid_namespace_is_never_taken_over(tmp_path):
    """A container on this host (same host name, own pids): its pid means nothing here."""
    record = _write_lock(str(tmp_path), pid=_dead_pid(), pid_namespace="pid:[1]")
    with pytest.raises(LockError, match="locked by a run on another container of this host .* delete "):
        acquire(str(tmp_path))
    assert read_lock(os.path.join(str(tmp_path), LOCK_NAME)) == record


def test_unreadable_lock_is_refused_and_release_keeps_a_foreign_lock(tmp_path):
    folder = str(tmp_path / "a")
    os.makedirs(folder)
    open(os.path.join(folder, LOCK_NAME), "w").close()  # empty: cannot tell who holds it
    with pytest.raises(LockError, match="unreadable lock file .* delete "):
        acquire(folder)
    os.remove(os.path.join(folder, LOCK_NAME))
    mine = acquire(folder)
    other = _write_lock(folder, token="someone-else")  # replaced behind our back
    release(folder, mine)
    assert read_lock(os.path.join(folder, LOCK_NAME)) == other


def _contend(folder, start_at, results, all_tried):
    time.sleep(max(0.0, start_at - time.time()))
    try:
        record = acquire(folder)
        results.put(("won", record["pid"]))
        all_tried.wait(60)  # hold it until every process has tried
    except LockError as e:
        results.put(("lost", str(e)))


def test_several_processes_taking_over_one_stale_lock_one_wins(tmp_path):
    folder = str(tmp_path)
    _write_lock(folder, pid=_dead_pid())
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 0.5
    all_tried = ctx.Event()  # not a fixed hold time: a process that starts late still finds the lock held
    procs = [ctx.Process(target=_contend, args=(folder, start_at, results, all_tried)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    all_tried.set()
    for p in procs:
        p.join(timeout=60)
    won = [o for o in outcomes if o[0] == "won"]
    assert len(won) == 1, outcomes
    assert all("in use by another run" in o[1] and f"pid {won[0][1]}" in o[1] for o in outcomes if o[0] == "lost")


def test_a_requeued_slurm_job_takes_over_the_lock_of_its_earlier_run(tmp_path, monkeypatch, caplog):
    """SLURM killed the job at its time limit on gpu-node-17 (no clean release) and requeued it; the
    new run (same SLURM_JOB_ID, SLURM_RESTART_COUNT one higher) starts on another node. Any other
    job, or the same run, is still refused."""
    folder, path = str(tmp_path), os.path.join(str(tmp_path), LOCK_NAME)
    earlier = dict(host="gpu-node-17", pid=4242, slurm_job_id="981", slurm_restart_count=0)
    for job, restarts in (("982", "1"), ("981", "0"), ("", "1")):  # another job; not requeued; no job
        record = _write_lock(folder, **earlier)
        monkeypatch.setenv("SLURM_JOB_ID", job)
        monkeypatch.setenv("SLURM_RESTART_COUNT", restarts)
        with pytest.raises(LockError, match="locked by a run on another host"):
            acquire(folder)
        assert read_lock(path) == record
    _write_lock(folder, **earlier)
    monkeypatch.setenv("SLURM_JOB_ID", "981")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with caplog.at_level("WARNING"):
        mine = acquire(folder)
    assert read_lock(path) == mine and (mine["slurm_job_id"], mine["slurm_restart_count"]) == ("981", 1)
    assert "took over the stale lock" in caplog.text and "earlier run of SLURM job 981 (requeued)" in caplog.text
    release(folder, mine)
    # On this host, a live holder of the same job is never taken over (pid and start time checked).
    record = _write_lock(
        folder, pid=os.getpid(), process_start=process_start(os.getpid()), slurm_job_id="981", slurm_restart_count=0
    )
    with pytest.raises(LockError, match="in use by another run"):
        acquire(folder)
    assert read_lock(path) == record
