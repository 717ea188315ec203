"""Attention pictures from a real video and a real checkpoint file."""

import numpy as np
import pytest
import torch
from evalkit import check, make_eval_root, make_random_checkpoint, run, write_config
from PIL import Image

from videoattn.apps.visualize import compute_attention, load_clip, pick_key, render_grid
from videoattn.config import load_config
from videoattn.data.annotations import Annotations
from videoattn.data.dataset import VideoClipDataset
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.data.windows import window_layout
from videoattn.datasets.synthetic import make_indexed_video
from videoattn.engine.inference import build_inference_model


@pytest.fixture(scope="module")
def setup(synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attention")
    data = make_eval_root(synthetic_root, str(tmp / "data"), num_good=1)
    cfg_path = write_config(str(tmp / "cfg.yaml"), data, extra="")
    cfg = load_config(cfg_path, ["data.num_frames=8", "data.test_crop_size=96", "data.train_jitter_scales=[96,120]"])
    ckpt = make_random_checkpoint(cfg, str(tmp / "ckpt.pyth"))
    model = build_inference_model(cfg, ckpt, torch.device("cpu"))
    clip, times = load_clip(cfg.data, data["good"][0])
    return {
        "tmp": tmp,
        "cfg": cfg,
        "cfg_path": cfg_path,
        "ckpt": ckpt,
        "model": model,
        "clip": clip,
        "times": times,
        "video": data["good"][0],
    }


def _attention(s, query, layer="res3"):
    return compute_attention(
        s["model"], s["clip"], query, layer, layer, s["cfg"].data.mean, s["cfg"].data.std, s["times"]
    )


def test_maps_and_pictures_depend_on_the_query(setup):
    a = _attention(setup, (1, 0.2, 0.2))
    b = _attention(setup, (6, 0.8, 0.7))
    assert a.cbam_key == "res3.1.cbam" and a.nl_key == "res3.1.nonlocal"
    assert a.nl.shape == b.nl.shape and a.nl.sum() == pytest.approx(1.0, abs=1e-4)
    assert not np.allclose(a.nl, b.nl, atol=1e-4)  # the non-local row is the query's
    np.testing.assert_allclose(a.cbam, b.cbam)  # CBAM does not depend on the query
    assert a.frames.shape == (8, 96, 96, 3) and 0 <= a.frames.min() and a.frames.max() <= 1
    pa, pb = str(setup["tmp"] / "a.png"), str(setup["tmp"] / "b.png")
    render_grid(a, pa, title="a", dpi=100)
    render_grid(b, pb, title="a", dpi=100)
    ia, ib = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (pa, pb))
    assert ia.shape == ib.shape and ia.shape[0] > 300 and ia.shape[1] > 800
    assert ia.std() > 10  # not a blank canvas
    h = ia.shape[0]
    assert np.abs(ia[2 * h // 3 :] - ib[2 * h // 3 :]).mean() > 1.0  # the non-local row differs


@pytest.mark.parametrize("protocol", ["pyslowfast", "mmaction2", "videoattn"])
def test_the_clip_is_the_protocols_single_test_view(setup, tmp_path, protocol):
    """load_clip shows what testing with one view and one crop scores (pyslowfast: the first clip;
    mmaction2, videoattn: the centre one); with --start, the feature window starting then."""
    video = str(tmp_path / "v.webm")
    make_indexed_video(video, 150, 25, width=128, height=96)
    cfg = load_config(setup["cfg_path"], [f"data.protocol={protocol}", "data.num_frames=8"])
    test = VideoClipDataset(cfg.data, "test", Annotations([(video, 0)], ["a"]), num_clips=1, num_crops=1)[0]
    clip, times = load_clip(cfg.data, video)
    assert torch.equal(clip, test["clip"])
    assert times == pytest.approx([i / 25 for i in test["frame_indices"].tolist()])
    win = window_layout(Protocol(protocol), ClipSpec.from_data(cfg.data), 150, 25.0, stride_s=1.0)
    _, times = load_clip(cfg.data, video, start_s=1.0)
    assert times == pytest.approx([i / 25 for i in win.indices[1]])


def test_pick_key_by_stage_or_name():
    keys = ["res3.1.cbam", "res3.0.cbam", "res4.1.nonlocal", "res4.1.cbam", "res3.1.nonlocal"]
    assert pick_key(keys, "res3", "cbam") == "res3.1.cbam"
    assert pick_key(keys, "res4.1.nonlocal", "nonlocal") == "res4.1.nonlocal"
    with pytest.raises(ValueError, match="res3.1.nonlocal, res4.1.nonlocal"):
        pick_key(keys, "res5", "nonlocal")
    assert pick_key(["res3.1.cbam"], "res3", "nonlocal") is None  # model without non-local blocks


def test_model_without_non_local_gets_a_two_row_picture(setup):
    from videoattn.models import build_model

    cfg = load_config(
        setup["cfg_path"],
        [
            "data.num_frames=8",
            "data.test_crop_size=96",
            "data.train_jitter_scales=[96,120]",
            "model.non_local.locations=[[],[],[],[]]",
        ],
    )
    model = build_model(cfg.model).eval()
    res = compute_attention(
        model, setup["clip"], (3, 0.5, 0.5), "res4", "res3", cfg.data.mean, cfg.data.std, setup["times"]
    )
    assert res.nl is None and res.cbam_key == "res4.1.cbam"
    path = str(setup["tmp"] / "cbam_only.png")
    render_grid(res, path, dpi=60)
    two_rows = np.asarray(Image.open(path))
    render_grid(_attention(setup, (3, 0.5, 0.5)), path, dpi=60)
    assert two_rows.shape[0] < 0.8 * np.asarray(Image.open(path)).shape[0]  # 2 rows vs 3


def test_query_outside_the_clip_is_rejected(setup):
    with pytest.raises(ValueError, match="frame must be in"):
        _attention(setup, (8, 0.5, 0.5))


@pytest.mark.slow
def test_cli_writes_png_and_gif(setup):
    png, gif = str(setup["tmp"] / "cli.png"), str(setup["tmp"] / "cli.gif")
    check(
        run(
            [
                "tools/visualize_attention.py",
                "--config",
                setup["cfg_path"],
                "--checkpoint",
                setup["ckpt"],
                "--video",
                setup["video"],
                "--output",
                png,
                "--gif",
                gif,
                "--query",
                "2",
                "0.3",
                "0.6",
                "--nl-layer",
                "res4",
                "data.num_frames=8",
            ]
        )
    )
    assert Image.open(png).size[0] > 1000
    im = Image.open(gif)
    assert im.n_frames == 8


@pytest.mark.slow
def test_cli_broken_video_is_a_one_line_error(setup, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    proc = run(
        [
            "tools/visualize_attention.py",
            "--config",
            setup["cfg_path"],
            "--checkpoint",
            setup["ckpt"],
            "--video",
            str(broken),
            "--output",
            str(tmp_path / "a.png"),
        ]
    )
    assert proc.returncode != 0
    assert "video error:" in proc.stderr and str(broken) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "a.png").exists()


@pytest.mark.slow
def test_cli_start_past_the_end_is_a_one_line_error_naming_the_duration(setup, tmp_path):
    from videoattn.data import open_video

    video = open_video(setup["video"])
    duration = video.num_frames / video.fps
    png = tmp_path / "late.png"
    proc = run(
        [
            "tools/visualize_attention.py",
            "--config",
            setup["cfg_path"],
            "--checkpoint",
            setup["ckpt"],
            "--video",
            setup["video"],
            "--output",
            str(png),
            "--start",
            f"{duration + 0.5:g}",
        ]
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --start {duration + 0.5:g} s is outside {setup['video']} ({duration:.2f} s long)"
    ]
    assert not png.exists()
