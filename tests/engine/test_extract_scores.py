"""``features.save_scores``: one forward pass gives the features and the per-window class
probabilities (checked against the model called by hand), the same numbers predict's timeline
shows; a re-run asking for scores completes videos finished without them."""

import json
import os

import numpy as np
import pytest
import torch
from evalkit import window_views
from videokit import make_long_video

from videoattn.apps.extract import extract_features, window_features, window_features_and_logits
from videoattn.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(setup):
    """The shared evaluation kit (tests/engine/conftest.py) plus a long video of three actions."""
    os.makedirs(setup["tmp"] / "long", exist_ok=True)
    long = str(setup["tmp"] / "long" / "long.mp4")
    make_long_video(long, [1, 2, 5], frames_each=30, fps=30, width=96, height=72)
    return dict(setup, long=long)


def test_scores_equal_the_model_and_the_predict_timeline(setup):
    from videoattn.apps.predict import predict_videos
    from videoattn.data import open_video
    from videoattn.engine.inference import build_inference_model

    overrides = [
        "features.save_scores=true",
        "features.layer=res4",
        "features.num_spatial_crops=3",
        "features.stride_seconds=0.4",
    ]
    cfg = load_config(setup["cfg"], overrides)
    out = str(setup["tmp"] / "feats")
    assert extract_features(cfg, setup["long"], out, setup["ckpt"])["num_done"] == 1
    meta = json.load(open(os.path.join(out, "long.json")))
    feats, scores = np.load(os.path.join(out, "long.npy")), np.load(os.path.join(out, meta["scores"]))
    names = open(os.path.join(out, "classes.txt")).read().splitlines()
    assert meta["scores"] == "scores/long.npy" and scores.shape == (meta["num_windows"], 8) and feats.shape[1] == 64
    assert names == open(setup["data"]["classes"]).read().splitlines()
    model = build_inference_model(cfg, setup["ckpt"], torch.device("cpu"))
    reader = open_video(setup["long"])
    for w in (0, meta["num_windows"] - 1):
        views = window_views(reader.get_frames(meta["frame_indices"][w]), cfg.data, 3)
        with torch.no_grad():
            probs = model(views).softmax(dim=1).mean(dim=0)
            stage = model.forward_intermediates(views, ["res4"])["res4"].mean(dim=(2, 3, 4)).mean(dim=0)
        np.testing.assert_allclose(scores[w], probs.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(feats[w], stage.numpy(), rtol=1e-4, atol=1e-5)
    # predict's timeline of the same video with the same config: the same windows and numbers
    results, _, _ = predict_videos(cfg, setup["long"], str(setup["tmp"] / "pred"), setup["ckpt"], top_k=3)
    windows = results[0].windows
    assert [w.start_s for w in windows] == pytest.approx(meta["starts_s"])
    for w, row in zip(windows, scores):
        assert list(w.indices[:3]) == np.argsort(-row, kind="stable")[:3].tolist()
        np.testing.assert_allclose(w.scores[:3], np.sort(row)[::-1][:3], rtol=1e-5)


def test_rerun_with_scores_completes_videos_finished_without(setup):
    out = str(setup["tmp"] / "rerun")
    source = os.path.dirname(setup["data"]["good"][0])
    good = len(setup["data"]["good"])
    first = extract_features(load_config(setup["cfg"]), source, out, setup["ckpt"])
    assert first["num_done"] == good and not os.path.exists(os.path.join(out, "scores"))
    with_scores = load_config(setup["cfg"], ["features.save_scores=true"])
    second = extract_features(with_scores, source, out, setup["ckpt"])
    assert second["num_written"] == good and second["num_skipped_done"] == 0
    assert sorted(os.listdir(os.path.join(out, "scores"))) == sorted(
        os.path.splitext(os.path.basename(p))[0] + ".npy" for p in setup["data"]["good"]
    )
    third = extract_features(with_scores, source, out, setup["ckpt"])
    assert third["num_written"] == 0 and third["num_skipped_done"] == good


def test_one_forward_pass_gives_both_outputs():
    from videoattn.models import ResNet3D

    torch.manual_seed(0)
    model = ResNet3D(depth=18, base_channels=8, num_classes=5, nonlocal_locations=[[], [0], [], []]).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    for layer in ("pool", "res3", "res5"):
        feats, logits = window_features_and_logits(model, x, layer)
        torch.testing.assert_close(feats, window_features(model, x, layer))
        torch.testing.assert_close(logits, model(x))
