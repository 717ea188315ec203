"""evaluate_clips on hand-built batches (single process; the 2-rank case is in test_eval_distributed)."""

import numpy as np
import pytest
import torch

from videoattn.data.transforms import DeviceNormalizer
from videoattn.evaluation.evaluate import evaluate_clips


class ChannelMean(torch.nn.Module):
    """logits = per-channel mean of the clip: (B, 3, T, H, W) -> (B, 3); lets a test choose the logits."""

    def forward(self, x):
        return x.mean(dim=(2, 3, 4))


def _batch(logits, labels, video_index, valid=None, skipped=()):
    logits = torch.tensor(logits, dtype=torch.float32)
    clip = logits[:, :, None, None, None].expand(-1, -1, 2, 4, 4).contiguous()
    n = len(labels)
    return {
        "clip": clip,
        "label": torch.tensor(labels),
        "video_index": torch.tensor(video_index),
        "view_index": torch.zeros(n, dtype=torch.long),
        "valid": torch.tensor(valid if valid is not None else [True] * n),
        "error": ["" if v else "broken" for v in (valid or [True] * n)],
        "skipped": list(skipped),
    }


def _ce(logits, label):
    z = np.asarray(logits, dtype=np.float64)
    return float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[label])


def test_evaluate_clips_hand_computed():
    model = ChannelMean().train()
    loader = [
        _batch([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], [0, 2], [0, 1], skipped=[("a.mp4", "moov atom not found")]),
        _batch([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]], [2, 1], [2, 3]),
        _batch([[2.0, 1.0, 0.0], [9.0, 9.0, 9.0]], [0, 0], [0, 4], valid=[True, False]),  # video 0 again: padding
    ]
    out = evaluate_clips(model, loader, torch.device("cpu"), DeviceNormalizer([0, 0, 0], [1, 1, 1]))
    # videos 0..3 scored once each; video 4 invalid; the repeated video 0 counts once
    assert out["num_clips"] == 4 and out["num_invalid"] == 1
    assert out["top1"] == pytest.approx(2 / 4)  # videos 0 and 2 right
    assert out["top5"] == pytest.approx(1.0)  # 3 classes: always within top-5
    expected_loss = np.mean([_ce([2, 1, 0], 0), _ce([0, 3, 1], 2), _ce([0, 0, 5], 2), _ce([1, 0, 0], 1)])
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert out["skipped"] == [("a.mp4", "moov atom not found")]
    assert model.training, "evaluate_clips must restore the model's training mode"


def test_evaluate_clips_empty_loader_gives_nan():
    out = evaluate_clips(ChannelMean(), [], torch.device("cpu"), DeviceNormalizer([0, 0, 0], [1, 1, 1]))
    assert out["num_clips"] == 0 and np.isnan(out["top1"])


def test_evaluate_clips_counts_non_finite_logits_and_scores_the_rest():
    """Issue 19.5: a clip whose logits hold NaN or inf is counted, not scored (its topk is arbitrary)."""
    loader = [
        _batch([[2.0, 1.0, 0.0], [float("nan"), 0.0, 0.0]], [0, 0], [0, 1]),
        _batch([[float("inf"), 0.0, 0.0], [0.0, 3.0, 1.0]], [0, 2], [2, 3]),
    ]
    out = evaluate_clips(ChannelMean(), loader, torch.device("cpu"), DeviceNormalizer([0, 0, 0], [1, 1, 1]))
    assert out["num_non_finite"] == 2 and out["num_clips"] == 2
    assert out["top1"] == pytest.approx(1 / 2)  # video 0 right, video 3 wrong; 1 and 2 not scored
    assert out["loss"] == pytest.approx(np.mean([_ce([2, 1, 0], 0), _ce([0, 3, 1], 2)]), rel=1e-5)


def test_checkpoint_of_another_architecture_fails_clearly(tmp_path):
    from videoattn.config import load_config
    from videoattn.engine.checkpoint import CheckpointError, make_checkpoint, save_checkpoint
    from videoattn.engine.inference import build_inference_model, load_weights
    from videoattn.models import build_model

    small = ["model.num_classes=4", "model.base_channels=8"]
    i3d = load_config(None, ["model.preset=I3D_NL_CBAM_R18"] + small)
    c2d = load_config(None, ["model.preset=C2D_R18"] + small)
    path = str(tmp_path / "i3d.pyth")
    src = build_model(i3d.model)
    save_checkpoint(path, make_checkpoint({"module." + k: v for k, v in src.state_dict().items()}))  # DDP prefix
    with pytest.raises(CheckpointError, match="does not match the configured model.*unexpected"):
        load_weights(build_model(c2d.model), path)
    model = build_inference_model(i3d, path, torch.device("cpu"))
    assert not model.training
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)


@pytest.mark.slow
def test_test_net_reports_a_missing_checkpoint_without_traceback(tmp_path):
    import os
    import subprocess
    import sys

    from evalkit import REPO

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  preset: C2D_R18\n")
    proc = subprocess.run(
        [
            sys.executable,
            "tools/test_net.py",
            "--config",
            str(cfg),
            "--checkpoint",
            str(tmp_path / "nope.pyth"),
            f"data.root={tmp_path}",
            "data.val_split=val.csv",
            f"output_dir={tmp_path / 'out'}",
        ],  # not the repo's output/
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "checkpoint error: checkpoint not found" in proc.stderr


def test_checkpoint_resolution_order(tmp_path):
    from videoattn.config import load_config
    from videoattn.engine.checkpoint import CheckpointError
    from videoattn.engine.inference import resolve_weights

    cfg = load_config(None, [f"output_dir={tmp_path}"])
    with pytest.raises(CheckpointError, match="none found"):
        resolve_weights(cfg)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("checkpoint_epoch_00002.pyth", "checkpoint_epoch_00010.pyth"):
        (folder / name).write_bytes(b"x")
    assert resolve_weights(cfg) == ("checkpoint", str(folder / "checkpoint_epoch_00010.pyth"))
    (folder / "checkpoint_best.pyth").write_bytes(b"x")
    assert resolve_weights(cfg) == ("checkpoint", str(folder / "checkpoint_best.pyth"))
    named = load_config(None, [f"output_dir={tmp_path}", "test.checkpoint_file=a.pyth"])
    assert resolve_weights(named) == ("checkpoint", "a.pyth")
    assert resolve_weights(cfg, "b.pyth") == ("checkpoint", "b.pyth")
