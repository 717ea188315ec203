"""Preemption-safe training through the real tool: 2 ranks started as srun tasks (SLURM_* variables,
no torchrun), gloo on CPU, data.num_workers=0. Real signals land in the middle of an epoch (sent by
tests/engine/fault_worker.py right after a chosen optimizer update, i.e. between two update
boundaries); every rank stops at the next boundary, writes a mid-epoch checkpoint, exits 75
(SIGUSR1: requeue) or 143 (SIGTERM); each re-run resumes at that iteration, and the end is
bit-identical to an uninterrupted run. Also a signal during validation and during a checkpoint
write (single process), with time-based mid-epoch checkpoints."""

import glob
import os
import re

import pytest
import torch
from ddp_worker import small_overrides
from slurmkit import srun

from videoattn.engine import checkpoint as ck
from videoattn.utils.lock import LOCK_NAME

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
TRAIN = os.path.join(REPO, "tools", "train_net.py")
WORKER = os.path.join(HERE, "fault_worker.py")
EPOCHS = 3


def _overrides(root, out, *extra):
    # 24 videos, global batch 4 (2 per rank), 2 batches per update: 6 iterations, 3 updates per epoch.
    # Warm-up + cosine, validation with precise BN every epoch, dropout: all of it must resume exactly.
    return small_overrides(
        root,
        out,
        f"solver.max_epoch={EPOCHS}",
        "train.batch_size=4",
        "train.accumulation_steps=2",
        "solver.lr_policy=cosine",
        "solver.warmup_epochs=1",
        "solver.warmup_start_lr=0.005",
        "train.eval_period=1",
        "train.checkpoint_period=1",
        "train.keep_last=0",
        "model.dropout=0.3",
        "data.random_flip=true",
        *extra,
    )


def _train(root, out, fault=(), ntasks=2, extra=()):
    args = ([WORKER, *fault] if fault else []) + [TRAIN, "--config", CFG, *_overrides(root, out, *extra)]
    return srun(args, ntasks=ntasks, timeout=400)


def _same_state(a: dict, b: dict) -> None:
    assert a["model_state"].keys() == b["model_state"].keys()
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    sa, sb = a["optimizer_state"]["state"], b["optimizer_state"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    assert a["scheduler_state"]["last_epoch"] == b["scheduler_state"]["last_epoch"]
    assert a["global_step"] == b["global_step"] and a["best_top1"] == b["best_top1"]


def _mid_epoch_files(out):
    return sorted(os.path.basename(p) for _, p in ck.list_checkpoints(out) if ck.is_mid_epoch(p))


def _clean(out):
    assert glob.glob(os.path.join(out, "**", ".*.tmp"), recursive=True) == []
    assert not os.path.exists(os.path.join(out, LOCK_NAME))


@pytest.mark.slow
def test_two_ranks_stopped_by_real_signals_mid_epoch_resume_bit_identical(synthetic_root, tmp_path):
    ref_out, out = str(tmp_path / "reference"), str(tmp_path / "preempted")
    results = _train(synthetic_root, ref_out)
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:]
    assert "launcher srun: rank 0 of 2 (local rank 0), master localhost:" in results[0][1]

    # Run 1: rank 1 alone gets SIGUSR1 right after its 4th update (epoch 2, iteration 2 of 6); both
    # ranks stop at the next boundary (iteration 4), save, and exit 75.
    results = _train(synthetic_root, out, ("signal_at_update", "1", "4", "USR1"))
    assert [rc for rc, _, _ in results] == [75, 75], results[0][2][-3000:] + results[1][2][-3000:]
    log0 = results[0][1]
    first = ck.mid_epoch_checkpoint_path(out, 2, 4)
    assert (
        f"stopped in epoch 2 at iteration 4/6 (a signal on another rank); saved {first}; exit status 75 "
        f"(requeue)" in log0
    )
    assert _mid_epoch_files(out) == ["checkpoint_epoch_00002_iter_000004.pyth"]
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [1]
    saved = ck.load_checkpoint(first)
    assert saved["position"]["iteration"] == 4 and saved["global_step"] == 3 + 2 and saved["epoch"] == 0
    assert len(saved["position"]["ranks"]) == 2 and saved["position"]["world_size"] == 2
    _clean(out)

    # Run 2: resumes at epoch 2, iteration 4; both ranks get SIGTERM after their 3rd update here
    # (epoch 3, iteration 4): stop at the next boundary, the epoch's last batch (6/6), before its
    # validation; exit 143. The first mid-epoch file is superseded by epoch 2's checkpoint: pruned.
    results = _train(synthetic_root, out, ("signal_at_update", "0,1", "3", "TERM"))
    assert [rc for rc, _, _ in results] == [143, 143], results[0][2][-3000:]
    log0 = results[0][1]
    assert f"resumed from {first} (epoch 1 done, global step 5, epoch 2 at iteration 4)" in log0
    assert "epoch 2/3 [6/6]" in log0 and not re.search(r"epoch 2/3 \[[1-4]/6\]", log0)  # log_period=2
    second = ck.mid_epoch_checkpoint_path(out, 3, 6)
    assert f"stopped in epoch 3 at iteration 6/6 (signal SIGTERM on this rank); saved {second}; exit status 143" in log0
    assert _mid_epoch_files(out) == ["checkpoint_epoch_00003_iter_000006.pyth"]
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [1, 2]
    _clean(out)

    # Run 3: resumes after epoch 3's last batch: its validation and checkpoint, from the saved sums.
    results = _train(synthetic_root, out)
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:]
    assert f"resumed from {second}" in results[0][1]
    assert _mid_epoch_files(out) == [] and [e for e, _ in ck.list_epoch_checkpoints(out)] == [1, 2, 3]
    _clean(out)

    for epoch in (2, EPOCHS):
        a, b = (ck.load_checkpoint(ck.epoch_checkpoint_path(d, epoch)) for d in (ref_out, out))
        _same_state(a, b)
        # The epoch's summary adds the sums saved at the stop to the ones after it: the same numbers.
        assert a["metrics"] == {
            **b["metrics"],
            "clips_per_s": a["metrics"]["clips_per_s"],
            "data_wait_frac": a["metrics"]["data_wait_frac"],
        }
        assert a["metrics"]["clips"] == 24
    first_ref = ck.load_checkpoint(ck.epoch_checkpoint_path(ref_out, 1))["model_state"]
    assert any(not torch.equal(first_ref[k], v) for k, v in a["model_state"].items())  # it did train


@pytest.mark.slow
def test_signals_during_validation_and_during_a_checkpoint_write(synthetic_root, tmp_path):
    """One process, a mid-epoch checkpoint every update (train.checkpoint_period_minutes). SIGTERM
    as validation starts: validation and the epoch's checkpoint complete (written although
    train.checkpoint_period=2 does not ask for it), then exit 143. In the re-run SIGUSR1 lands in
    the middle of writing epoch 2's checkpoint: the file is whole, the run stops at the next update
    (epoch 3, iteration 2), exit 75. The last run finishes equal to an uninterrupted one."""
    ref_out, out = str(tmp_path / "reference"), str(tmp_path / "faults")
    extra = ("train.checkpoint_period=2", "train.checkpoint_period_minutes=0.0001")
    ((rc, log, err),) = _train(synthetic_root, ref_out, (), 1, extra)
    assert rc == 0, err[-3000:]
    assert "checkpoint_epoch_00001_iter_000002.pyth" in log and _mid_epoch_files(ref_out) == []  # pruned

    ((rc, log, err),) = _train(synthetic_root, out, ("signal_in_eval", "0", "TERM"), 1, extra)
    assert rc == 143, err[-3000:]
    assert f"stopped after epoch 1 (signal SIGTERM on this rank); saved {ck.epoch_checkpoint_path(out, 1)}" in log
    assert "val top1" in log and [e for e, _ in ck.list_epoch_checkpoints(out)] == [1]
    _clean(out)

    ((rc, log, err),) = _train(
        synthetic_root, out, ("signal_in_write", "checkpoint_epoch_00002.pyth", "USR1"), 1, extra
    )
    assert rc == 75, err[-3000:]
    written = ck.epoch_checkpoint_path(out, 2)
    assert "stopped in epoch 3 at iteration 2/6 (signal SIGUSR1 on this rank)" in log
    assert ck.is_complete_checkpoint(written) and ck.load_checkpoint(written)["global_step"] == 6
    assert _mid_epoch_files(out) == ["checkpoint_epoch_00003_iter_000002.pyth"]  # epoch 2's are superseded
    _clean(out)

    ((rc, log, err),) = _train(synthetic_root, out, (), 1, extra)
    assert rc == 0, err[-3000:]
    assert f"resumed from {ck.mid_epoch_checkpoint_path(out, 3, 2)}" in log
    _same_state(*(ck.load_checkpoint(ck.epoch_checkpoint_path(d, EPOCHS)) for d in (ref_out, out)))
    assert _mid_epoch_files(out) == []
    _clean(out)
