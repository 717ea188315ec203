"""Which weights the inference tools load (checkpoint, --pretrained, the output folder, then
model.pretrained) and which class names they show (the dataset's, else the weights')."""

import pytest

from videoattn.config import load_config
from videoattn.engine.checkpoint import CheckpointError
from videoattn.engine.inference import class_names_for, resolve_weights


def test_resolve_weights_order(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}", "model.pretrained=i3d_r50"])
    assert resolve_weights(cfg) == ("pretrained", "i3d_r50")  # nothing else: the config's name
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "checkpoint_epoch_00002.pyth").write_bytes(b"x")
    assert resolve_weights(cfg) == ("checkpoint", str(folder / "checkpoint_epoch_00002.pyth"))  # a trained run wins
    assert resolve_weights(cfg, pretrained="c2d_r50") == ("pretrained", "c2d_r50")  # --pretrained: explicit
    assert resolve_weights(cfg, "a.pyth", pretrained="") == ("checkpoint", "a.pyth")
    with_file = load_config(None, [f"output_dir={tmp_path}", "test.checkpoint_file=t.pyth"])
    assert resolve_weights(with_file) == ("checkpoint", "t.pyth")
    assert resolve_weights(with_file, pretrained="slow_r50") == ("pretrained", "slow_r50")
    with pytest.raises(CheckpointError, match="no checkpoint given .*--pretrained"):
        resolve_weights(load_config(None, [f"output_dir={tmp_path / 'empty'}"]))


def test_class_names_prefer_the_dataset_then_the_weights(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "list.txt").write_text("x.mp4 0\ny.mp4 2\n")  # PySlowFast list: indices only
    named = load_config(None, [f"data.root={tmp_path}", "data.classes_file=classes.txt"]).data
    indexed = load_config(None, [f"data.root={tmp_path}", "data.train_split=list.txt"]).data
    nothing = load_config(None, [f"data.root={tmp_path}", "data.train_split=none.csv"]).data
    weights = ["w0", "w1", "w2"]
    assert class_names_for(named, 3, weights) == ["a", "b", "class_2"]
    assert class_names_for(indexed, 3, weights) == weights  # indices are not names
    assert class_names_for(indexed, 3) == ["0", "1", "2"]
    assert class_names_for(nothing, 3, weights) == weights
    assert class_names_for(nothing, 2) == ["class_0", "class_1"]
    with pytest.raises(ValueError, match=r"model.num_classes=1 but the class list \(classes.txt\) has 2 classes"):
        class_names_for(named, 1, weights)
