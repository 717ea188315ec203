"""Checkpoint extensions: newest valid checkpoint, retention, fine-tuning head re-init, RNG state."""

import logging
import os
import random

import numpy as np
import pytest
import torch

from videoattn.config import config_to_dict, load_config
from videoattn.engine import checkpoint as ck
from videoattn.models import build_model
from videoattn.train.solver import build_optimizer, build_scheduler
from videoattn.utils.outputs import claim_outputs


def _tiny_cfg(num_classes=5):
    return load_config(None, ["model.preset=C2D_R18", "model.base_channels=8", f"model.num_classes={num_classes}"])


def _write(out, epoch, value):
    path = ck.epoch_checkpoint_path(str(out), epoch)
    claim_outputs(str(out), ck.TOOL, [ck.checkpoint_name(path)])  # as train_net does: its own, prunable
    ck.save_checkpoint(path, ck.make_checkpoint({"w": torch.full((3,), float(value))}, {}, epoch=epoch - 1))


def test_epoch_checkpoint_name_follows_pyslowfast(tmp_path):
    assert ck.epoch_checkpoint_path(str(tmp_path), 5) == str(tmp_path / "checkpoints" / "checkpoint_epoch_00005.pyth")


def test_newest_valid_checkpoint_skips_truncated_and_garbage(tmp_path, caplog):
    for e in (1, 2, 3, 4):
        _write(tmp_path, e, e)
    p3, p4 = ck.epoch_checkpoint_path(str(tmp_path), 3), ck.epoch_checkpoint_path(str(tmp_path), 4)
    data = open(p4, "rb").read()
    with open(p4, "wb") as f:  # truncated mid-write (as a copy interrupted by a crash would leave it)
        f.write(data[: len(data) // 2])
    with open(p3, "wb") as f:
        f.write(b"not a checkpoint at all")
    with open(tmp_path / "checkpoints" / "notes.txt", "w") as f:
        f.write("ignored")
    with caplog.at_level(logging.WARNING):
        path, ckpt = ck.find_last_checkpoint(str(tmp_path))
    assert path == ck.epoch_checkpoint_path(str(tmp_path), 2)
    assert torch.equal(ckpt["model_state"]["w"], torch.full((3,), 2.0))
    assert p4 in caplog.text and p3 in caplog.text
    assert ck.find_last_checkpoint(str(tmp_path / "nothing_here")) is None


def test_keep_last_prunes_oldest_periodic_only(tmp_path):
    for e in range(1, 7):
        _write(tmp_path, e, e)
    ck.save_checkpoint(ck.best_checkpoint_path(str(tmp_path)), ck.make_checkpoint({}, {}))
    removed = ck.prune_checkpoints(str(tmp_path), keep_last=2)
    assert sorted(os.path.basename(p) for p in removed) == [f"checkpoint_epoch_0000{e}.pyth" for e in (1, 2, 3, 4)]
    assert [e for e, _ in ck.list_epoch_checkpoints(str(tmp_path))] == [5, 6]
    assert os.path.exists(ck.best_checkpoint_path(str(tmp_path)))
    assert ck.prune_checkpoints(str(tmp_path), keep_last=0) == []


def test_full_training_state_round_trip(tmp_path):
    cfg = _tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.solver)
    sched = build_scheduler(opt, cfg.solver, 4)
    model(torch.randn(2, 3, 4, 32, 32)).logsumexp(1).mean().backward()
    opt.step()
    sched.step()
    path = ck.epoch_checkpoint_path(str(tmp_path), 1)
    ck.save_checkpoint(
        path,
        ck.make_checkpoint(
            {"module." + k: v for k, v in model.state_dict().items()},
            config_to_dict(cfg),
            optimizer_state=opt.state_dict(),
            scheduler_state=sched.state_dict(),
            epoch=0,
            global_step=1,
            rng_state=[ck.get_rng_state()],
        ),
    )
    loaded = ck.load_checkpoint(path)
    torch.manual_seed(1)
    model2 = build_model(cfg.model)
    opt2, sched2 = build_optimizer(model2, cfg.solver), None
    sched2 = build_scheduler(opt2, cfg.solver, 4)
    model2.load_state_dict(loaded["model_state"])  # strict: no 'module.' prefix left
    opt2.load_state_dict(loaded["optimizer_state"])
    sched2.load_state_dict(loaded["scheduler_state"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    m1 = [s["momentum_buffer"] for s in opt.state_dict()["state"].values()]
    m2 = [s["momentum_buffer"] for s in opt2.state_dict()["state"].values()]
    assert len(m1) > 0 and all(torch.equal(a, b) for a, b in zip(m1, m2))
    assert sched2.last_epoch == sched.last_epoch == 1 and loaded["global_step"] == 1
    assert loaded["config"]["model"]["num_classes"] == 5


def test_fine_tune_reinitialises_only_the_head(tmp_path, caplog):
    torch.manual_seed(0)
    src = build_model(_tiny_cfg(num_classes=7).model)
    path = str(tmp_path / "pretrained.pyth")
    ck.save_checkpoint(path, ck.make_checkpoint(src.state_dict(), {}))
    torch.manual_seed(1)
    dst = build_model(_tiny_cfg(num_classes=3).model)
    head_before = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("head.proj.")}
    with caplog.at_level(logging.WARNING):
        info = ck.load_pretrained(dst, path)
    assert sorted(info["reinitialised"]) == ["head.proj.bias", "head.proj.weight"]
    assert "re-initialising the classifier head" in caplog.text and path in caplog.text
    for k, v in dst.state_dict().items():
        if k.startswith("head.proj."):
            assert torch.equal(v, head_before[k]) and v.shape[0] == 3
        else:
            assert torch.equal(v, src.state_dict()[k]), k


def test_fine_tune_rejects_a_different_backbone(tmp_path):
    src = build_model(load_config(None, ["model.preset=C2D_R18", "model.base_channels=8"]).model)
    path = str(tmp_path / "other.pyth")
    ck.save_checkpoint(path, ck.make_checkpoint(src.state_dict(), {}))
    dst = build_model(load_config(None, ["model.preset=C2D_R18", "model.base_channels=16"]).model)
    with pytest.raises(ck.CheckpointError, match="shape mismatch"):
        ck.load_pretrained(dst, path)


def test_rng_state_round_trip():
    state = ck.get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    ck.set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])
