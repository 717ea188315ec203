"""Training with data.clips_per_video=2 through the real tool: the divisibility error (one line);
2 ranks (srun tasks, gloo on CPU) where every update sees train.batch_size clips and an epoch has
twice the updates; a run stopped mid-epoch by a real signal resumes at the right video and ends
bit-identical to the uninterrupted run. That run also draws class-balanced epochs
(data.balance=sampler) from a skewed training split (5:1), so the balanced draw resumes exactly too."""

import json
import os
import subprocess
import sys

import pytest
import torch
from ddp_worker import small_overrides
from slurmkit import clean_env, srun
from videokit import write_skewed_split

from videoattn.engine import checkpoint as ck
from videoattn.train.midepoch import resume_iteration
from videoattn.utils.distributed import DistInfo

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
TRAIN = os.path.join(REPO, "tools", "train_net.py")
WORKER = os.path.join(HERE, "fault_worker.py")


def _overrides(root, out, *extra):
    # 24 videos, global batch 8 clips = 2 ranks x 2 videos x 2 clips: 6 iterations (updates) per epoch
    return small_overrides(
        root,
        out,
        "data.clips_per_video=2",
        "solver.max_epoch=2",
        "train.eval_period=0",
        "train.checkpoint_period=1",
        "train.keep_last=0",
        "data.random_flip=true",
        "solver.lr_policy=cosine",
        *extra,
    )


def _train(root, out, fault=(), extra=()):
    args = ([WORKER, *fault] if fault else []) + [TRAIN, "--config", CFG, *_overrides(root, out, *extra)]
    return srun(args, ntasks=2, timeout=400)


def test_clips_per_video_must_divide_the_clips_per_process(synthetic_root, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, TRAIN, "--config", CFG, *small_overrides(synthetic_root, str(out), "data.clips_per_video=3")],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "data.clips_per_video=3 must divide" in lines[0] and "train.batch_size=8 / 1 process(es) = 8" in lines[0]
    assert not out.exists()  # failed before any set-up


def test_resume_iteration_counts_videos_and_knows_clips_per_video():
    parts = [{"rank": 0}, {"rank": 1}]
    pos = {"epoch": 0, "iteration": 4, "world_size": 2, "batch_size": 2, "clips_per_video": 2, "ranks": parts}
    info = DistInfo(1, 2, 1, torch.device("cpu"))
    assert resume_iteration(pos, info, 2, 1, 6, "ck", 2) == (4, parts[1])  # exactly where it stopped
    # the same 2 videos per process but now 1 clip each: 16 videos were done, at 4 per iteration = 4
    assert resume_iteration(pos, info, 2, 1, 6, "ck", 1) == (4, None)
    # 1 process of 4 videos (x 2 clips): 16 videos done = 4 iterations
    assert resume_iteration(pos, DistInfo(0, 1, 0, torch.device("cpu")), 4, 1, 6, "ck", 2) == (4, None)
    old = {k: v for k, v in pos.items() if k != "clips_per_video"}  # checkpoints from before the option: 1
    assert resume_iteration(old, info, 2, 1, 6, "ck", 1) == (4, parts[1])
    # another sampler (data.balance) orders the epoch differently: as many videos, not the saved part
    assert resume_iteration(dict(pos, balance="none"), info, 2, 1, 6, "ck", 2, "sampler") == (4, None)
    assert resume_iteration(dict(pos, balance="sampler"), info, 2, 1, 6, "ck", 2, "sampler") == (4, parts[1])
    assert resume_iteration(pos, info, 2, 1, 6, "ck", 2, "loss") == (4, parts[1])  # same order as none


@pytest.mark.slow
def test_two_ranks_global_batch_of_clips_and_a_mid_epoch_resume(synthetic_root, tmp_path):
    ref_out, out = str(tmp_path / "reference"), str(tmp_path / "preempted")
    skewed = write_skewed_split(synthetic_root, str(tmp_path / "skewed.csv"), [5, 5, 5, 5, 1, 1, 1, 1])  # 24 videos
    balance = (f"data.train_split={skewed}", "data.balance=sampler")
    results = _train(synthetic_root, ref_out, extra=balance)
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2][-3000:]
    log0 = results[0][1]
    assert "global batch 8 clips (4 per process, 2 per video)" in log0 and "epoch 1/2 [6/6]" in log0
    drawn = "class balance sampler: 24 videos in 8 of 8 classes, 1..5 per class; each epoch draws 24 videos, 3 of each"
    assert drawn in log0
    epochs = [json.loads(line) for line in open(os.path.join(ref_out, "metrics.jsonl"))]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    # per epoch: 24 videos x 2 clips = 48 clips in 6 updates of the global batch (8 clips)
    assert [(r["clips"], r["step"]) for r in epochs] == [(48, 6), (48, 12)]
    assert ck.load_checkpoint(ck.epoch_checkpoint_path(ref_out, 2))["scheduler_state"]["last_epoch"] == 12

    # Rank 0 gets SIGUSR1 after its 2nd update of epoch 2 (update 8): both stop at the next
    # boundary, iteration 3 of 6: 3 x 2 videos per rank done; the re-run skips exactly those.
    results = _train(synthetic_root, out, ("signal_at_update", "0", "8", "USR1"), balance)
    assert [rc for rc, _, _ in results] == [75, 75], results[0][2][-3000:] + results[1][2][-3000:]
    saved = ck.load_checkpoint(ck.mid_epoch_checkpoint_path(out, 2, 3))
    position = saved["position"]
    assert (position["iteration"], position["batch_size"], position["clips_per_video"]) == (3, 2, 2)
    assert saved["global_step"] == 9
    results = _train(synthetic_root, out, extra=balance)
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:]
    assert "epoch 2 at iteration 3)" in results[0][1] and "epoch 2/2 [6/6]" in results[0][1]
    a, b = (ck.load_checkpoint(ck.epoch_checkpoint_path(d, 2)) for d in (ref_out, out))
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    assert a["global_step"] == b["global_step"] == 12
    assert a["metrics"] == {
        **b["metrics"],
        "clips_per_s": a["metrics"]["clips_per_s"],
        "data_wait_frac": a["metrics"]["data_wait_frac"],
    }
