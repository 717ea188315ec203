"""Fail-fast paths of training: config typos, bad settings, a non-finite loss."""

import os
import sys

import pytest
from ddp_worker import small_overrides

from videoattn.config import load_config
from videoattn.engine import checkpoint as ck
from videoattn.train.loop import train
from videoattn.utils.distributed import per_process_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))
from train_net import main  # noqa: E402  (the tool's entry point, in-process)

CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")


def test_config_typo_on_the_command_line_names_the_nearest_key(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--config", CFG, f"output_dir={tmp_path}", "solver.base_lrr=0.1"])
    assert "unknown config key 'solver.base_lrr'" in str(e.value.code) and "'solver.base_lr'" in str(e.value.code)
    assert not os.listdir(tmp_path)


def test_config_typo_in_a_yaml_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {CFG}\nsolver:\n  max_epochs: 3\n")
    with pytest.raises(SystemExit) as e:
        main(["--config", str(bad)])
    assert f"{bad}:3" in str(e.value.code) and "did you mean 'solver.max_epoch'" in str(e.value.code)


def test_batch_size_check():
    assert per_process_batch(16, "train.batch_size", 2) == 8 and per_process_batch(3, "train.batch_size", 1) == 3
    for bad, world in ((5, 2), (1, 2), (0, 1)):
        with pytest.raises(ValueError, match="train.batch_size=.* multiple of the number of processes"):
            per_process_batch(bad, "train.batch_size", world)


def test_fp16_on_cpu_and_bad_accumulation_are_errors(synthetic_root, tmp_path):
    cfg = load_config(CFG, small_overrides(synthetic_root, str(tmp_path / "out"), "train.mixed_precision=fp16"))
    with pytest.raises(ValueError, match="needs CUDA"):
        train(cfg)
    with pytest.raises(ValueError, match="accumulation_steps=0 must be >= 1"):  # at load
        load_config(CFG, small_overrides(synthetic_root, str(tmp_path / "out"), "train.accumulation_steps=0"))


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_iteration_and_writes_no_checkpoint(synthetic_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    # A real divergence: the first update with this learning rate overflows the weights.
    cfg = load_config(CFG, small_overrides(synthetic_root, out, "solver.base_lr=1e38", "solver.max_epoch=2"))
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* epoch 1, iteration 2/3"):
        train(cfg)
    assert ck.list_epoch_checkpoints(out) == [] and not os.path.exists(ck.best_checkpoint_path(out))
    # Via the command line: a one-line error and exit status 1, still nothing written.
    assert main(["--config", CFG, *small_overrides(synthetic_root, out, "solver.base_lr=1e38")]) == 1
    assert "NonFiniteLossError: non-finite training loss" in capsys.readouterr().err
    assert ck.list_epoch_checkpoints(out) == []
