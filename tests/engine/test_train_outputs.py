"""train_net never replaces, appends to or deletes a file it did not create (issue 19, finding 3's
rule for train_net's output_dir), through the real tool: a user's config.yaml, train.log,
metrics.jsonl, tensorboard/, missing_videos_<split>.txt or checkpoint is refused in one line naming
it and kept byte for byte; retention deletes only train_net's own checkpoints; a rerun and an
auto-resume into its own output_dir go on as before (its files are listed in the folder's
``.videoattn-outputs.json``, see videoattn/utils/outputs.py)."""

import os
import shutil

import pytest
import torch
from ddp_worker import small_overrides
from evalkit import run
from test_untrusted_checkpoints import DEMO_CFG

from videoattn.engine import checkpoint as ck
from videoattn.utils.outputs import MANIFEST, claim_outputs, read_manifest

pytestmark = pytest.mark.slow  # real train_net processes

USER_BYTES = b"the user's own file\n"
HINT = "use another output_dir"


def _train(root, out, *extra):
    return run(["tools/train_net.py", "--config", DEMO_CFG, *small_overrides(root, out, *extra)])


def _ok(proc):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def _refused(proc, path):
    assert proc.returncode == 1, f"exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}"
    assert proc.stderr.strip().splitlines() == [
        f"error: {path} exists and was not written by train_net; not replaced: move it away or {HINT}"
    ], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def _user_file(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(USER_BYTES)


def _val_with_a_missing_video(root, tmp_path):
    """The synthetic val list plus one row whose file is missing: train_net writes missing_videos_val.txt."""
    with open(os.path.join(root, "val.txt")) as f:
        text = f.read()
    path = tmp_path / "val_missing.txt"
    path.write_text(text + "val/MISSINGvideo_000000_000010.mp4 0\n")
    return f"data.val_split={path}"


@pytest.mark.parametrize(
    "name",
    [
        "config.yaml",
        "train.log",
        "metrics.jsonl",
        "missing_videos_val.txt",
        "tensorboard/notes.txt",
        "checkpoints/checkpoint_best.pyth",
    ],
)
def test_train_net_refuses_a_users_file_at_one_of_its_names(synthetic_root, tmp_path, name):
    out = str(tmp_path / "out")
    mine = os.path.join(out, name)
    _user_file(mine)
    _user_file(os.path.join(out, "notes.txt"))  # an unrelated file: no reason to refuse
    top = name.split("/")[0]
    proc = _train(synthetic_root, out, "solver.max_epoch=1", _val_with_a_missing_video(synthetic_root, tmp_path))
    _refused(proc, os.path.join(out, "tensorboard") if top == "tensorboard" else mine)
    assert sorted(os.listdir(out)) == sorted({top, "notes.txt"})  # nothing written, no list of outputs
    assert os.listdir(os.path.dirname(mine)) == [os.path.basename(mine)] or top == name  # no event file either
    assert open(mine, "rb").read() == USER_BYTES


def test_checkpoints_never_replace_or_delete_a_users_file_and_reruns_resume(synthetic_root, tmp_path):
    own, other = str(tmp_path / "own"), str(tmp_path / "other")
    keep = ["train.keep_last=1", "train.eval_period=0", "train.checkpoint_period=1"]
    _ok(_train(synthetic_root, own, "solver.max_epoch=1", *keep))

    # The user copies a checkpoint in by hand and leaves a file at the next epoch's name.
    copy, junk = ck.epoch_checkpoint_path(other, 1), ck.epoch_checkpoint_path(other, 2)
    os.makedirs(os.path.dirname(copy))
    shutil.copy(ck.epoch_checkpoint_path(own, 1), copy)
    copied = open(copy, "rb").read()
    _user_file(junk)
    proc = _train(synthetic_root, other, "solver.max_epoch=3", *keep)
    assert f"resumed from {copy}" in proc.stdout  # a copied-in checkpoint is still resumed from
    _refused(proc, junk)
    assert open(junk, "rb").read() == USER_BYTES and open(copy, "rb").read() == copied

    os.remove(junk)  # moved away: the run goes on, the copy is kept
    log = _ok(_train(synthetic_root, other, "solver.max_epoch=3", *keep))
    assert f"resumed from {copy}" in log and f"{copy} was not written by train_net; not counted, not deleted" in log
    assert [e for e, _ in ck.list_epoch_checkpoints(other)] == [1, 3] and open(copy, "rb").read() == copied

    log = _ok(_train(synthetic_root, own, "solver.max_epoch=2", *keep))  # a rerun into its own folder
    assert f"resumed from {ck.epoch_checkpoint_path(own, 1)}" in log
    assert f"deleted {ck.epoch_checkpoint_path(own, 1)}" in log  # its own old checkpoint
    assert [e for e, _ in ck.list_epoch_checkpoints(own)] == [2]
    assert ck.load_checkpoint(ck.epoch_checkpoint_path(own, 2))["epoch"] == 1  # as numbered in test_train_guards
    listed = read_manifest(own)  # what it wrote is listed as its own
    assert all(
        listed.get(n) == "train_net"
        for n in ("config.yaml", "train.log", "metrics.jsonl", "tensorboard", "checkpoints/checkpoint_epoch_00002.pyth")
    ), listed


def test_retention_counts_and_deletes_only_listed_checkpoints(tmp_path):
    out = str(tmp_path)
    paths = [ck.epoch_checkpoint_path(out, e) for e in (1, 2, 3, 4)]
    claim_outputs(out, "train_net", [os.path.join("checkpoints", os.path.basename(p)) for p in paths[1:]])  # not 1
    for p in paths:
        ck.save_checkpoint(p, ck.make_checkpoint({"w": torch.ones(1)}, {}))
    assert ck.prune_checkpoints(out, keep_last=1) == paths[1:3]
    assert [p for _, p in ck.list_checkpoints(out)] == [paths[0], paths[3]]
    assert sorted(read_manifest(out)) == [
        "checkpoints/checkpoint_epoch_00002.pyth",
        "checkpoints/checkpoint_epoch_00003.pyth",
        "checkpoints/checkpoint_epoch_00004.pyth",
    ]  # dropped at the next claim
    assert os.path.exists(os.path.join(out, MANIFEST))
