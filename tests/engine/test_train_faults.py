"""Faults during a real run end in one line, a non-zero status and no partial file: Ctrl-C (a real
SIGINT), a full disk (ENOSPC injected on one write by tests/engine/fault_worker.py), an unwritable
output folder, a stalled torchrun rank (dist_timeout_minutes); new files get the umask's mode."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from ddp_worker import small_overrides
from evalkit import run

from videoattn.engine import checkpoint as ck
from videoattn.utils.lock import LOCK_NAME

pytestmark = pytest.mark.slow  # real training processes with injected faults

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
TRAIN = os.path.join(REPO, "tools", "train_net.py")
WORKER = os.path.join(HERE, "fault_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def _temp_files(folder):
    return glob.glob(os.path.join(folder, "**", ".*.tmp"), recursive=True)


def _overrides(root, out, *extra):
    return small_overrides(root, out, "train.checkpoint_period=1", "train.keep_last=0", *extra)


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # even if the test runner was started with SIGINT ignored


def test_ctrl_c_mid_epoch_one_line_exit_130_last_checkpoint_intact(synthetic_root, tmp_path):
    out = str(tmp_path / "out")
    proc = subprocess.Popen(
        [sys.executable, TRAIN, "--config", CFG, *_overrides(synthetic_root, out, "solver.max_epoch=50")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=REPO,
        preexec_fn=_sigint_default,
    )
    for line in proc.stdout:  # mid-epoch, after at least one checkpoint
        if re.search(r"epoch 3/50 \[2/3\]", line):
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert len(_lines(stderr)) == 1 and "Traceback" not in stderr, stderr
    m = re.fullmatch(r"interrupted at epoch (\d+), iteration (\d)/3; last checkpoint: (\S+)", stderr.strip())
    assert m, stderr
    newest = ck.list_epoch_checkpoints(out)[-1]
    assert int(m.group(1)) == newest[0] + 1 and m.group(3) == newest[1]
    assert ck.load_checkpoint(newest[1])["epoch"] == newest[0] - 1  # whole and loadable
    assert _temp_files(out) == [] and not os.path.exists(os.path.join(out, LOCK_NAME))


@pytest.mark.parametrize("name,nth", [("checkpoint_epoch_00002.pyth", 0), ("config.yaml", 0), ("metrics.jsonl", 2)])
def test_disk_full_one_line_naming_the_file_no_partial_file(synthetic_root, tmp_path, name, nth):
    out = str(tmp_path / "out")
    proc = subprocess.run(
        [
            sys.executable,
            WORKER,
            "enospc",
            name,
            str(nth),
            TRAIN,
            "--config",
            CFG,
            *_overrides(synthetic_root, out, "solver.max_epoch=3"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 1 and len(_lines(proc.stderr)) == 1, proc.stderr[-3000:]
    path = {
        "config.yaml": os.path.join(out, "config.yaml"),
        "metrics.jsonl": os.path.join(out, "metrics.jsonl"),
        "checkpoint_epoch_00002.pyth": ck.epoch_checkpoint_path(out, 2),
    }[name]
    assert proc.stderr.strip() == f"error: cannot write {path}: No space left on device [Errno 28]"
    assert _temp_files(out) == [] and not os.path.exists(os.path.join(out, LOCK_NAME))
    if name == "metrics.jsonl":  # the failed row is cut off, the earlier ones stay
        rows = [json.loads(line) for line in open(path)]
        assert len(rows) == nth and open(path, "rb").read().endswith(b"}\n")
    elif name == "config.yaml":
        assert not os.path.exists(path) and ck.list_epoch_checkpoints(out) == []  # before any training
    else:
        assert not os.path.exists(path)
        assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [1]
        assert ck.load_checkpoint(ck.epoch_checkpoint_path(out, 1))["epoch"] == 0


def test_unwritable_output_is_one_line_before_any_work(synthetic_root, setup):
    s = setup
    blocker = s["tmp"] / "a_file"
    blocker.write_text("not a folder\n")  # a folder below a regular file: fails for root too
    bad = str(blocker / "out")
    commands = {
        "train": [TRAIN, "--config", CFG, *_overrides(synthetic_root, bad)],
        "test": ["tools/test_net.py", "--config", s["cfg"], "--checkpoint", s["ckpt"], f"output_dir={bad}"],
        "extract": [
            "tools/extract_features.py",
            "--config",
            s["cfg"],
            "--checkpoint",
            s["ckpt"],
            "--input",
            os.path.join(s["data"]["root"], "val.csv"),
            "--output",
            bad,
        ],
    }
    for tool, args in commands.items():
        proc = run(args)
        assert proc.returncode == 1 and len(_lines(proc.stderr)) == 1, (tool, proc.stderr[-3000:])
        assert re.fullmatch(
            rf"error: cannot write {re.escape(bad)}(/test)?: Not a directory \[Errno 20\]", proc.stderr.strip()
        ), (tool, proc.stderr)
        assert "training on" not in proc.stdout
    if os.geteuid() != 0:  # permissions do not stop root
        ro = s["tmp"] / "read_only"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            proc = run([TRAIN, "--config", CFG, *_overrides(synthetic_root, str(ro))])
        finally:
            ro.chmod(0o700)
        assert proc.returncode == 1 and "Permission denied" in proc.stderr and len(_lines(proc.stderr)) == 1
        assert os.listdir(ro) == []


def test_ctrl_c_during_feature_extraction(setup):
    s = setup
    feats, videos = str(s["tmp"] / "features_interrupted"), s["tmp"] / "good_videos.txt"
    videos.write_text("".join(p + "\n" for p in s["data"]["good"]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "tools/extract_features.py",
            "--config",
            s["cfg"],
            "--checkpoint",
            s["ckpt"],
            "--input",
            str(videos),
            "--output",
            feats,
            "features.stride_seconds=0.05",
            "features.batch_size=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=REPO,
        preexec_fn=_sigint_default,
    )
    while proc.poll() is None and not glob.glob(os.path.join(feats, "*.npy")):
        time.sleep(0.01)  # wait for the first finished video
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and len(_lines(stderr)) == 1, stderr[-3000:]
    assert stderr.strip() == f"interrupted; finished videos are kept in {feats} and a re-run does the rest"
    assert _temp_files(feats) == [] and not os.path.exists(os.path.join(feats, LOCK_NAME))
    done = glob.glob(os.path.join(feats, "*.npy"))
    assert done and len(done) < 5  # interrupted, not finished


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_new_files_get_the_umask_mode(synthetic_root, tmp_path, umask, mode):
    out = str(tmp_path / "out")
    proc = subprocess.run(
        [sys.executable, TRAIN, "--config", CFG, *_overrides(synthetic_root, out, "solver.max_epoch=1")],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=300,
        umask=umask,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in (
        ck.epoch_checkpoint_path(out, 1),
        ck.best_checkpoint_path(out),
        os.path.join(out, "config.yaml"),
        os.path.join(out, "metrics.jsonl"),
    ):
        assert oct(os.stat(path).st_mode & 0o777) == oct(mode), path


def test_stalled_rank_ends_the_job_after_dist_timeout_minutes(synthetic_root, tmp_path):
    """Rank 1 sleeps 10 minutes inside training's first all-reduce; rank 0 waits dist_timeout_minutes
    (9 s) and ends the job with one line naming the key (torchrun then stops rank 1)."""
    out, marker = str(tmp_path / "out"), str(tmp_path / "rank1_stalled")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        WORKER,
        "stall",
        "1",
        "600",
        marker,
        TRAIN,
        "--config",
        CFG,
        *_overrides(synthetic_root, out, "dist_timeout_minutes=0.15"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)  # << 600 s sleep
    assert proc.returncode != 0 and os.path.exists(marker)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert re.fullmatch(
        r"error: rank 0 waited dist_timeout_minutes=0\.15 for the other processes, one of which "
        r"stalled or died \(.*[Tt]imed out.*\)",
        errors[0],
    ), errors
    assert "RuntimeError" not in proc.stderr  # the worker's own error is that one line
    assert not os.path.exists(os.path.join(out, LOCK_NAME)) and _temp_files(out) == []
