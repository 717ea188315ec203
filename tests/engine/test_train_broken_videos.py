"""Broken videos in a real training run are counted and named once per file per epoch, however
often the retries' random substitutes hit them again (train and validation, real broken files)."""

import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from data_helpers import copy_root, make_broken  # noqa: E402  (tests/data's helpers)
from ddp_worker import small_overrides  # noqa: E402

from videoattn.config import load_config  # noqa: E402
from videoattn.data.annotations import clear_index_cache  # noqa: E402
from videoattn.train.loop import train  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
KINDS = ["empty", "text", "zero_frames"]  # never decodable (a truncated file may be, in part)


def _break(root, split, every):
    """Break every ``every``-th video of ``split`` (cycling through the kinds); return their paths."""
    names = [line.split()[0] for line in open(os.path.join(root, f"{split}.txt"))]
    good = os.path.join(root, names[1])
    broken = [os.path.join(root, n) for n in names[::every]]
    for i, path in enumerate(broken):
        make_broken(path, KINDS[i % len(KINDS)], good)
    return broken


@pytest.mark.slow
def test_each_broken_file_is_counted_and_named_once_per_epoch(synthetic_root, tmp_path):
    root = copy_root(synthetic_root, str(tmp_path / "root"))
    clear_index_cache()
    # A third of the training videos: a replacement is itself broken a third of the time, so
    # retries hit the same files again (with this seed: several times per epoch).
    train_broken, val_broken = _break(root, "train", 3), _break(root, "val", 4)
    out = str(tmp_path / "out")
    cfg = load_config(
        CFG,
        small_overrides(
            root,
            out,
            "solver.max_epoch=2",
            "train.eval_period=1",
            "bn.use_precise_stats=false",
            "data.train_split=train.txt",
            "data.val_split=val.txt",
        ),
    )
    result = train(cfg)
    assert len(train_broken) == 8 and len(val_broken) == 4
    for summary in result.history:
        assert summary["skipped"] == 8 and summary["val_skipped"] == 4
    epochs = [json.loads(r) for r in open(os.path.join(out, "metrics.jsonl")) if '"kind": "epoch"' in r]
    assert [(r["skipped"], r["val_skipped"]) for r in epochs] == [(8, 4), (8, 4)]
    log = open(os.path.join(out, "train.log")).read()
    assert len(re.findall(r"epoch \d: .*, 12 broken videos skipped", log)) == 2
    for epoch_log in re.split(r"epoch \d: train loss", log)[1:]:  # the lines after each epoch summary
        named = re.findall(r"skipped broken video (\S+): ", epoch_log)
        assert sorted(named) == sorted(train_broken + val_broken)  # every broken file, each once
    assert log.count(train_broken[0]) == 2  # once per epoch, nowhere else
