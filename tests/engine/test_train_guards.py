"""Training start-up and retention guards, through the real train_net tool (issue 9.2 and 9.6).

* retention (train.keep_last) counts only complete checkpoints: unreadable files numbered above
  the valid ones are neither counted nor deleted, and the newest valid checkpoint survives;
* model.num_classes must match the class list (one-line error at start-up, before any epoch);
* resuming in an output_dir whose checkpoint has another architecture is a one-line error.
"""

import os
import shutil

import pytest
import torch
from ddp_worker import small_overrides
from evalkit import run
from test_untrusted_checkpoints import DEMO_CFG

from videoattn.engine import checkpoint as ck
from videoattn.utils.outputs import claim_outputs

pytestmark = pytest.mark.slow  # real train_net / test_net processes


def _train(root, out, *extra):
    return run(["tools/train_net.py", "--config", DEMO_CFG, *small_overrides(root, out, *extra)])


def _ok(proc):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def _one_line_error(proc, *needles):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, out[-3000:]
    return out


def test_retention_never_deletes_the_newest_valid_checkpoint(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    keep = ["train.keep_last=1", "train.eval_period=0"]
    _ok(_train(synthetic_root, out, "solver.max_epoch=2", *keep))
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [2]
    empty, garbage = ck.epoch_checkpoint_path(out, 7), ck.epoch_checkpoint_path(out, 8)
    open(empty, "wb").close()
    with open(garbage, "wb") as f:
        f.write(os.urandom(4096))

    log = _ok(_train(synthetic_root, out, "solver.max_epoch=3", *keep))
    assert f"resumed from {ck.epoch_checkpoint_path(out, 2)}" in log
    assert f"deleted {ck.epoch_checkpoint_path(out, 2)}" in log
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [3, 7, 8]  # unreadable ones left in place
    assert ck.load_checkpoint(ck.epoch_checkpoint_path(out, 3))["epoch"] == 2

    log = _ok(_train(synthetic_root, out, "solver.max_epoch=4", *keep))  # continues, not from scratch
    assert f"resumed from {ck.epoch_checkpoint_path(out, 3)}" in log
    assert ck.load_checkpoint(ck.epoch_checkpoint_path(out, 4))["epoch"] == 3


def test_prune_counts_complete_files_only(tmp_path):
    claim_outputs(
        str(tmp_path), ck.TOOL, [ck.checkpoint_name(ck.epoch_checkpoint_path(str(tmp_path), e)) for e in (1, 2, 3, 9)]
    )  # train_net's own (listed before saving)
    for e in (1, 2, 3):
        ck.save_checkpoint(ck.epoch_checkpoint_path(str(tmp_path), e), ck.make_checkpoint({"w": torch.ones(1)}, {}))
    data = open(ck.epoch_checkpoint_path(str(tmp_path), 3), "rb").read()
    with open(ck.epoch_checkpoint_path(str(tmp_path), 9), "wb") as f:
        f.write(data[: len(data) // 2])  # truncated copy
    removed = ck.prune_checkpoints(str(tmp_path), keep_last=2)
    assert removed == [ck.epoch_checkpoint_path(str(tmp_path), 1)]
    assert [e for e, _ in ck.list_epoch_checkpoints(str(tmp_path))] == [2, 3, 9]


def test_num_classes_must_match_the_class_list(synthetic_root, tmp_path):
    for n in (5, 10):  # fewer crashed mid-epoch in cross_entropy; more trained silently
        out = str(tmp_path / f"run{n}")
        _one_line_error(
            _train(synthetic_root, out, "solver.max_epoch=1", f"model.num_classes={n}"),
            f"model.num_classes={n}",
            "has 8 classes",
            "model.num_classes=8",
        )
        assert ck.list_epoch_checkpoints(out) == []


@pytest.fixture(scope="module")
def one_epoch_run(synthetic_root, tmp_path_factory):
    """The output folder of one real 1-epoch train_net run, shared by the tests below (read-only)."""
    out = str(tmp_path_factory.mktemp("guards") / "run")
    _ok(_train(synthetic_root, out, "solver.max_epoch=1", "train.eval_period=0"))
    return out


def test_testing_a_checkpoint_of_another_class_count_is_one_line(synthetic_root, one_epoch_run, tmp_path):
    checkpoint = ck.epoch_checkpoint_path(one_epoch_run, 1)
    proc = run(
        [
            "tools/test_net.py",
            "--config",
            DEMO_CFG,
            "--checkpoint",
            checkpoint,
            *small_overrides(synthetic_root, str(tmp_path / "test"), "model.num_classes=6"),
        ]
    )
    _one_line_error(proc, "8-class head", "model.num_classes=6")


def test_resuming_with_another_architecture_is_one_line(synthetic_root, one_epoch_run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(one_epoch_run, out)  # the run resumes in its own copy of the trained folder
    proc = _train(synthetic_root, out, "solver.max_epoch=2", "model.base_channels=16")
    _one_line_error(proc, ck.epoch_checkpoint_path(out, 1), "auto-resume", "does not match the configured model")
    assert [e for e, _ in ck.list_epoch_checkpoints(out)] == [1]
