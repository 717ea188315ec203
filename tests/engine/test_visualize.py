"""Attention pictures from a real video and a real checkpoint file."""

import copy
import json

import numpy as np
import pytest
import torch
from evalkit import check, make_eval_root, make_random_checkpoint, run, write_config
from PIL import Image

from videoattn.apps.channel_view import compute_channel_view, random_channel_sets, render_channels
from videoattn.apps.visualize import (
    ChannelOptions,
    Visualized,
    channel_view_of,
    compute_attention,
    load_clip,
    pick_key,
    render_grid,
    summary,
    visualize_video,
)
from videoattn.config import load_config
from videoattn.data.annotations import Annotations
from videoattn.data.dataset import VideoClipDataset
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.data.windows import window_layout
from videoattn.datasets.synthetic import make_indexed_video
from videoattn.engine.inference import build_inference_model
from videoattn.models import build_model, capture_channels
from videoattn.models.cbam import CBAM


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
    proc = check(
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
                "--channel-layer",
                "res4.0.cbam",
                "--top-channels",
                "2",
                "--random-draws",
                "3",
                "data.num_frames=8",
            ]
        )
    )
    assert Image.open(png).size[0] > 1000
    im = Image.open(gif)
    assert im.n_frames == 8
    channels = str(setup["tmp"] / "cli.channels.png")
    assert Image.open(channels).size[0] > 1000 and f"wrote {png}, {gif}, {channels}," in proc.stdout
    with open(str(setup["tmp"] / "cli.json")) as f:
        out = json.load(f)
    view, faith = out["channel_view"], out["channel_view"]["faithfulness"]
    assert view["block"] == "res4.0.cbam" and len(view["top_channels"]) == 2 and view["frames"] == 4
    assert faith["random_draws"] == 3 and faith["predicted_class"] == out["prediction"][0]["index"]
    assert faith["probability"] == pytest.approx(out["prediction"][0]["probability"], abs=1e-6)
    assert faith["drop_top_k"] == pytest.approx(faith["probability"] - faith["top_k_zeroed"])


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


# ------------------------------------------------------------------------------------- channel view
class _Masked(torch.nn.Module):
    """The block's CBAM, then the channels ``drop`` zeroed: brute force for zero_channels."""

    def __init__(self, cbam, drop):
        super().__init__()
        self.cbam, self.drop = cbam, list(drop)

    def forward(self, x):
        out = self.cbam(x).clone()
        out[:, self.drop] = 0
        return out


@torch.no_grad()
def _probability_without(model, clip, block, drop, target):
    """Class ``target``'s probability with channels ``drop`` of ``block``'s CBAM output zeroed: one pass."""
    model = copy.deepcopy(model)
    b = model.get_submodule(block)
    b.cbam = _Masked(b.cbam, drop)
    return float(model(clip[None]).softmax(1)[0, target])


def test_channel_view_numbers_equal_a_brute_force_recomputation(setup):
    model, clip = setup["model"], setup["clip"]
    view = compute_channel_view(model, clip, "res3.1.cbam", k=3, draws=4, seed=7)
    with torch.no_grad(), capture_channels(model, ["res3.1.cbam"]) as found:
        probs = model(clip[None])[0].softmax(0)
    weights = found["res3.1.cbam"].weights[0].numpy()
    C = weights.shape[0]
    np.testing.assert_array_equal(view.weights, weights)
    assert view.order.tolist() == sorted(range(C), key=lambda c: -weights[c].mean())  # largest mean weight first
    np.testing.assert_array_equal(view.top_maps, found["res3.1.cbam"].output[0, view.top].numpy())
    f, target = view.faithfulness, int(probs.argmax())
    assert f.target == target and f.probability == pytest.approx(float(probs[target]), rel=1e-5)
    sets = random_channel_sets(C, 3, 4, 7)
    assert all(len(set(s)) == 3 and 0 <= min(s) and max(s) < C for s in sets) and sets != random_channel_sets(
        C, 3, 4, 8
    )
    brute = [_probability_without(model, clip, "res3.1", s, target) for s in [view.top] + sets]
    assert f.top_k == pytest.approx(brute[0], rel=1e-5, abs=1e-7)
    assert f.random == pytest.approx(brute[1:], rel=1e-5, abs=1e-7)
    j = f.as_json()
    assert j["random_k_zeroed_mean"] == pytest.approx(np.mean(brute[1:]), rel=1e-5)
    assert j["random_k_zeroed_std"] == pytest.approx(np.std(brute[1:], ddof=1), rel=1e-3, abs=1e-8)
    # every channel zeroed: top and random sets are the same set, the block adds nothing to its shortcut
    every = compute_channel_view(model, clip, "res3.1.cbam", k=C, draws=2).faithfulness
    assert every.top_k == pytest.approx(_probability_without(model, clip, "res3.1", range(C), target), rel=1e-5)
    assert every.random == pytest.approx([every.top_k] * 2, rel=1e-5)
    path = str(setup["tmp"] / "channels.png")
    render_channels(_attention(setup, (3, 0.5, 0.5)), view, path, [0, 3, 7], title="t", class_name="c", dpi=60)
    assert np.asarray(Image.open(path).convert("L")).std() > 10


class _SpatialOnly(CBAM):
    """A CBAM block without a channel gate (``cbam.channel is None``, as ``model.cbam.gates=spatial`` builds)."""

    def __init__(self, cbam):
        super().__init__(1)
        self.channel, self.spatial = None, cbam.spatial

    def forward(self, x):
        return x * self.spatial(x)


def test_no_channel_gate_or_no_cbam_is_one_line_and_the_rest_is_drawn(setup, tmp_path):
    model = copy.deepcopy(setup["model"])
    model.res3[1].cbam = _SpatialOnly(model.res3[1].cbam)
    view, note = channel_view_of(model, setup["clip"], "res3", ChannelOptions())
    assert view is None and note == "res3.1.cbam has no channel gate: no channel view (the other pictures are drawn)"
    res = compute_attention(
        model, setup["clip"], (3, 0.5, 0.5), "res3", "res3", (0.45,) * 3, (0.225,) * 3, setup["times"]
    )
    assert res.cbam.shape == (4, 12, 12)  # the spatial map is still there
    cfg = load_config(setup["cfg_path"], ["data.num_frames=8", "model.cbam.stages=[]"])
    ckpt = make_random_checkpoint(cfg, str(tmp_path / "no_cbam.pyth"))
    out = visualize_video(cfg, ckpt, setup["video"], str(tmp_path / "a.png"))
    assert out.channels is None and out.note.startswith("this model has no CBAM block: no channel view")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "a.json",
        "a.png",
        "no_cbam.pyth",
    ]
    written = json.load(open(tmp_path / "a.json"))
    assert written["channel_view"] is None and written["channel_view_note"] == out.note and written["prediction"]


def test_non_finite_weights_or_logits_give_no_numbers(setup):
    clip = setup["clip"] * float("inf")  # a real clip scaled past float32: NaN everywhere from res2 on
    view, note = channel_view_of(setup["model"], clip, "res3", ChannelOptions())
    assert view is None and note.startswith("res3.1.cbam has NaN or inf channel weights: no channel view")
    model = copy.deepcopy(setup["model"])
    model.head.proj.bias.data[0] = float("nan")  # injected fault: finite channel weights, NaN logits
    view = compute_channel_view(model, setup["clip"], "res3.1.cbam", k=2, draws=2)
    assert view.faithfulness is None and view.note == "NaN or inf logits: no faithfulness numbers"
    assert view.as_json()["faithfulness"] is None and view.as_json()["faithfulness_note"] == view.note
    res = compute_attention(
        model, setup["clip"], (3, 0.5, 0.5), "res3", "res3", (0.45,) * 3, (0.225,) * 3, setup["times"]
    )
    written = summary(res, [str(i) for i in range(8)], "v", "w", Visualized(res, view, "", []))
    assert written["prediction"] is None and written["prediction_note"] == "NaN or inf logits: no prediction"
    with pytest.raises(ValueError, match="--top-channels 99: res3.1.cbam has"):
        compute_channel_view(setup["model"], setup["clip"], "res3.1.cbam", k=99)
