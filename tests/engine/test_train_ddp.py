"""Real 2-process gloo training under torchrun (one shared run for most assertions)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from ddp_worker import small_overrides

from videoattn.config import config_to_dict, load_config
from videoattn.engine import checkpoint as ck
from videoattn.engine.device import for_device

pytestmark = pytest.mark.slow  # every test reads one real 2-process torchrun training

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def torchrun(*args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)


@pytest.fixture(scope="module")
def ddp_run(synthetic_root, tmp_path_factory):
    """12 epochs on 2 processes, validation every 4 epochs on an odd number (15) of videos."""
    tmp = tmp_path_factory.mktemp("ddp_train")
    with open(os.path.join(synthetic_root, "val.txt")) as f:
        lines = [line for line in f if line.strip()][:15]
    odd_val = tmp / "val_odd.txt"
    odd_val.write_text("".join(lines))
    out = str(tmp / "out")
    overrides = small_overrides(
        synthetic_root,
        out,
        f"data.val_split={odd_val}",
        "train.keep_last=2",
        "solver.max_epoch=12",
        "train.eval_period=4",
        "train.checkpoint_period=2",
    )
    proc = torchrun(os.path.join(HERE, "ddp_worker.py"), "train", out, "", *overrides)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return {"out": out, "proc": proc, "rows": rows, "overrides": overrides}


def test_ranks_hold_identical_weights_equal_to_the_final_checkpoint(ddp_run):
    w0 = torch.load(os.path.join(ddp_run["out"], "rank0_weights.pt"))
    w1 = torch.load(os.path.join(ddp_run["out"], "rank1_weights.pt"))
    final = ck.load_checkpoint(ck.epoch_checkpoint_path(ddp_run["out"], 12))["model_state"]
    assert w0.keys() == w1.keys() == final.keys()
    assert any("running_mean" in k for k in w0)  # BN statistics (precise BN, pooled) included
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], final[k]), k


def test_each_validation_video_counts_once_across_ranks(ddp_run):
    val = [r for r in ddp_run["rows"] if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [4, 8, 12]
    assert all(r["num_clips"] == 15 for r in val)


def test_checkpoints_config_and_logs(ddp_run):
    out = ddp_run["out"]
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [10, 12]  # every 2 epochs, keep_last=2
    assert os.path.exists(ck.best_checkpoint_path(out))
    c = ck.load_checkpoint(ck.epoch_checkpoint_path(out, 12))
    assert not any(k.startswith("module.") for k in c["model_state"])
    assert c["epoch"] == 11 and c["global_step"] == 12 * 3  # 24 videos / global batch 8
    assert {"optimizer_state", "scheduler_state", "scaler_state", "rng_state", "config"} <= c.keys()
    assert len(c["rng_state"]) == 2 and c["scheduler_state"]["last_epoch"] == 36
    cfg = for_device(load_config(None, ddp_run["overrides"]), torch.device("cpu"))  # as the run saved it
    assert c["config"] == config_to_dict(cfg) and c["config"]["model"]["depth"] == 18
    assert config_to_dict(load_config(os.path.join(out, "config.yaml"))) == config_to_dict(cfg)
    events = os.listdir(os.path.join(out, "tensorboard"))
    assert len(events) == 1 and events[0].startswith("events.out.tfevents")
    kinds = {r["kind"] for r in ddp_run["rows"]}
    assert kinds == {"train", "epoch", "val"}
    epochs = [r for r in ddp_run["rows"] if r["kind"] == "epoch"]
    assert all(r["skipped"] == 0 and 0 <= r["data_wait_frac"] <= 1 and r["clips_per_s"] > 0 for r in epochs)
    log = ddp_run["proc"].stdout
    assert "rank0]" in log and "rank1]" not in log  # only rank 0 logs
    assert "epoch 12: train loss" in log


def test_training_loss_falls(ddp_run):
    losses = [r["loss"] for r in ddp_run["rows"] if r["kind"] == "epoch"]
    assert len(losses) == 12
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses


def test_ddp_gradient_equals_single_process_gradient(tmp_path):
    proc = torchrun(os.path.join(HERE, "ddp_worker.py"), "grad", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(tmp_path / "grad.json"))
    assert res["is_ddp"] and len(res["rel_diff"]) == res["num_params"] and res["grad_norm"] > 0
    assert max(res["rel_diff"].values()) < 1e-4
    # Precise BN: rank 0 saw N(0, 1) data, rank 1 N(2, 1); both hold the pooled statistics
    # of the union: mean 1, variance 1 + 1 (a plain average of the rank variances would give 1).
    (mean0, var0, used0), (mean1, var1, used1) = res["bn"]
    assert used0 == used1 == 3 and mean0 == mean1 and var0 == var1
    assert torch.allclose(torch.tensor(mean0), torch.ones(3), atol=0.1)
    assert torch.allclose(torch.tensor(var0), torch.full((3,), 2.0), atol=0.2)


def test_batch_size_not_divisible_by_world_size_is_a_clear_error(synthetic_root, tmp_path):
    proc = torchrun(
        os.path.join(REPO, "tools", "train_net.py"),
        "--config",
        os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml"),
        *small_overrides(synthetic_root, str(tmp_path / "out"), "train.batch_size=5"),
        timeout=120,
    )
    assert proc.returncode != 0
    assert "train.batch_size=5" in proc.stderr and "multiple of the number of processes (2)" in proc.stderr
    assert not os.path.exists(tmp_path / "out" / "checkpoints")
