"""Kill a real training process after its first checkpoint, resume it, compare with an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from ddp_worker import small_overrides

from videoattn.engine import checkpoint as ck
from videoattn.utils.outputs import claim_outputs

pytestmark = pytest.mark.slow  # real training processes, one SIGKILLed

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
EPOCHS = 4


def _start(root, out):
    # Warm-up + cosine (scheduler state), gradient accumulation, validation with precise BN and
    # best-checkpoint bookkeeping every 2 epochs: everything that resuming has to restore.
    overrides = small_overrides(
        root,
        out,
        f"solver.max_epoch={EPOCHS}",
        "solver.lr_policy=cosine",
        "solver.warmup_epochs=1",
        "solver.warmup_start_lr=0.005",
        "train.batch_size=4",
        "train.accumulation_steps=2",
        "train.checkpoint_period=1",
        "train.eval_period=2",
        "train.keep_last=0",
    )
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config", CFG, *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        cwd=REPO,
    )


def test_killed_and_resumed_run_ends_with_the_same_weights(synthetic_root, tmp_path):
    ref_out, out = str(tmp_path / "reference"), str(tmp_path / "interrupted")
    ref = _start(synthetic_root, ref_out)
    log, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, log[-4000:]

    victim = _start(synthetic_root, out)
    first = ck.epoch_checkpoint_path(out, 1)
    deadline = time.time() + 300
    while not os.path.exists(first) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)  # a real process death, not an exception
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    done = [e for e, _ in ck.list_epoch_checkpoints(out)]
    assert done and EPOCHS not in done, f"run finished before it was killed: {done}"
    # A newer checkpoint that a crash left truncated must be skipped, with a warning naming it.
    k = max(done)
    broken = ck.epoch_checkpoint_path(out, k + 1)
    claim_outputs(out, ck.TOOL, [ck.checkpoint_name(broken)])  # train_net lists a name before writing it
    data = open(ck.epoch_checkpoint_path(out, k), "rb").read()
    with open(broken, "wb") as f:
        f.write(data[: len(data) // 3])

    resumed = _start(synthetic_root, out)
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log[-4000:]
    assert f"skipping checkpoint {broken}" in log
    assert f"resumed from {ck.epoch_checkpoint_path(out, k)}" in log

    a = ck.load_checkpoint(ck.epoch_checkpoint_path(ref_out, EPOCHS))
    b = ck.load_checkpoint(ck.epoch_checkpoint_path(out, EPOCHS))
    assert a["model_state"].keys() == b["model_state"].keys()
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    sa, sb = a["optimizer_state"]["state"], b["optimizer_state"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    assert a["global_step"] == b["global_step"] == EPOCHS * 3  # 6 batches of 4, 2 per update
    assert a["scheduler_state"]["last_epoch"] == b["scheduler_state"]["last_epoch"]
    assert a["best_top1"] == b["best_top1"]
    # The reference run is a real one: its weights moved away from the first checkpoint's.
    first_ref = ck.load_checkpoint(ck.epoch_checkpoint_path(ref_out, 1))["model_state"]
    assert any(not torch.equal(first_ref[k_], v) for k_, v in a["model_state"].items())
