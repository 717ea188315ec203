"""data.balance=loss in a real training run (in-process, one process, real videos): the class
weights of a skewed split reach the training loss. (The balanced sampler's real 2-rank run with a
mid-epoch resume is in test_train_clips_per_video.py; its draws in tests/data/test_balance.py.)"""

import json
import os

import pytest
from ddp_worker import small_overrides
from videokit import write_skewed_split

from videoattn.config import load_config
from videoattn.data import build_dataset
from videoattn.data.samplers import ResumableDistributedSampler
from videoattn.train.loop import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")


def _first_loss(cfg) -> float:
    train(cfg)
    rows = [json.loads(line) for line in open(os.path.join(cfg.output_dir, "metrics.jsonl"))]
    return next(r["loss"] for r in rows if r["kind"] == "train")


@pytest.mark.slow
def test_the_first_update_s_loss_is_scaled_by_its_class_weight(synthetic_root, tmp_path):
    """4 videos, 3 of class 0 and 1 of class 1: weights 4 / (2 x 3) = 2/3 and 4 / (2 x 1) = 2. The
    seed is picked so that the first batch (2 videos) is of one class: the same model on the same
    clips, so its weighted loss is exactly that class's weight times the plain one."""
    split = write_skewed_split(synthetic_root, str(tmp_path / "skewed.csv"), [3, 1, 0, 0, 0, 0, 0, 0])

    def config(out, *extra):
        opts = small_overrides(synthetic_root, str(tmp_path / out), f"data.train_split={split}", *extra)
        return load_config(
            CFG,
            opts
            + [
                "solver.max_epoch=1",
                "train.eval_period=0",
                "train.batch_size=2",
                "train.log_period=1",
                "bn.use_precise_stats=false",
            ],
        )

    labels = [y for _, y in build_dataset(config("probe").data, "train").videos]
    assert sorted(labels) == [0, 0, 0, 1]
    seed = next(s for s in range(20) if len({labels[i] for i in _first_batch(s)}) == 1)
    weight = {0: 2 / 3, 1: 2.0}[labels[_first_batch(seed)[0]]]
    plain = _first_loss(config("none", f"seed={seed}"))
    weighted = _first_loss(config("loss", f"seed={seed}", "data.balance=loss"))
    assert weighted == pytest.approx(weight * plain, rel=1e-5)
    log = open(tmp_path / "loss" / "train.log").read()
    assert "class balance loss: 4 videos in 2 of 8 classes, 1..3 per class; loss weights 0.6667..2 (mean 1" in log
    assert (
        "class balance none: 4 videos in 2 of 8 classes, 1..3 per class" in open(tmp_path / "none" / "train.log").read()
    )


def _first_batch(seed: int) -> list:
    """The first 2 training videos of epoch 0 with ``seed`` (the training sampler, one process)."""
    sampler = ResumableDistributedSampler(range(4), num_replicas=1, rank=0, shuffle=True, seed=seed)
    sampler.set_epoch(0)
    return list(sampler)[:2]
