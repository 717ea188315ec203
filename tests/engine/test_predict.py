"""tools/predict.py on real videos: the same per-video predictions as test_net (same checkpoint,
views, videos), a timeline of a long video checked against windows scored by hand, a rendered
video with the input's frame count and fps, a folder mixing good and broken videos, locked and
claimed output folders."""

import csv
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
from evalkit import BROKEN_ID, MISSING_ID, check, run, window_views
from videokit import cut_file, make_long_video

from videoattn.apps.predict import PredictError, VideoResult, claim_output, format_table, render_result
from videoattn.apps.timeline import window_topk
from videoattn.config import load_config
from videoattn.utils.lock import folder_lock

LONG_LABELS = [0, 3, 4, 7]  # four synthetic actions one after the other


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def setup(setup):
    """The shared evaluation kit (tests/engine/conftest.py) plus a long video of four actions."""
    os.makedirs(setup["tmp"] / "long", exist_ok=True)
    long = str(setup["tmp"] / "long" / "long.mp4")
    make_long_video(long, LONG_LABELS, frames_each=40, fps=25, width=96, height=72)
    return dict(setup, long=long)


def _predict(setup, source, out, *extra, ckpt=None):
    return run(
        [
            "tools/predict.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            ckpt or setup["ckpt"],
            "--input",
            source,
            "--output",
            out,
            *extra,
        ]
    )


# -------------------------------------------------------------------------- agreement with test_net
@pytest.mark.slow
def test_predict_agrees_with_test_net(setup):
    test_out = str(setup["tmp"] / "test_run")
    check(run(["tools/test_net.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"], f"output_dir={test_out}"]))
    out = str(setup["tmp"] / "agree")
    proc = check(_predict(setup, os.path.join(setup["data"]["root"], "val.csv"), out))  # labels are not read
    reference = {r["video"]: r for r in _rows(os.path.join(test_out, "test", "predictions.csv"))}
    mine = {r["path"]: r for r in _rows(os.path.join(out, "predictions.csv"))}
    assert set(mine) == set(reference) and len(mine) == 6  # 5 good + the broken one
    for path, ref in reference.items():
        if path == setup["data"]["broken"]:
            assert mine[path]["error"] and mine[path]["pred1"] == "" and ref["pred1"] == ""
            continue
        assert [mine[path][f"pred{i}"] for i in range(1, 6)] == [ref[f"pred{i}"] for i in range(1, 6)]
        assert [mine[path][f"score{i}"] for i in range(1, 6)] == [ref[f"score{i}"] for i in range(1, 6)]
        assert mine[path]["num_views"] == "6"  # 2 clips x 3 crops, as test_net
    # independently of both: the mean softmax of test_net's saved per-view logits
    saved = np.load(os.path.join(test_out, "test", "view_logits.npz"))
    names = [n for n in open(setup["data"]["classes"]).read().splitlines() if n]
    for v, path in enumerate(saved["paths"]):
        logits = saved["logits"][saved["video_index"] == v]
        if not len(logits):
            continue
        probs = torch.from_numpy(logits).double().softmax(dim=1).mean(dim=0)
        top = probs.topk(5)
        assert [mine[str(path)][f"pred{i + 1}"] for i in range(5)] == [names[i] for i in top.indices.tolist()]
        np.testing.assert_allclose(
            [float(mine[str(path)][f"score{i + 1}"]) for i in range(5)], top.values.numpy(), rtol=1e-5
        )
    failed = {r["path"]: r["reason"] for r in _rows(os.path.join(out, "failed.csv"))}
    assert failed[setup["data"]["broken"]] and any(MISSING_ID in p for p in failed) and len(failed) == 2
    assert f"{BROKEN_ID}_000000_000010" in proc.stdout and "FAILED" in proc.stdout
    assert "5 of 7 videos predicted, 1 unreadable, 1 missing" in proc.stdout


# ----------------------------------------------------------------------------- timeline and render
@pytest.fixture(scope="module")
def long_run(setup):
    out = str(setup["tmp"] / "long_out")
    proc = check(_predict(setup, setup["long"], out, "--render", "--top-k", "3", "features.stride_seconds=0.4"))
    return out, proc


@pytest.mark.slow
def test_timeline_windows_equal_windows_scored_by_hand(long_run, setup):
    from videoattn.data import open_video
    from videoattn.data.protocols import ClipSpec, Protocol
    from videoattn.data.windows import window_layout
    from videoattn.engine.inference import build_inference_model

    out, proc = long_run
    cfg = load_config(setup["cfg"])
    rows = [r for r in _rows(os.path.join(out, "timeline.csv")) if r["video"] == "long"]
    reader = open_video(setup["long"])
    layout = window_layout(
        Protocol.from_data(cfg.data), ClipSpec.from_data(cfg.data, 1, 1), reader.num_frames, reader.fps, 0.4
    )
    assert reader.num_frames == 160 and len(layout.starts) > 10
    assert sorted({float(r["start_s"]) for r in rows}) == pytest.approx(layout.starts)
    assert all(1 <= int(r["rank"]) <= 3 for r in rows) and len(rows) == 3 * len(layout.starts)
    model = build_inference_model(cfg, setup["ckpt"], torch.device("cpu"))
    names = [n for n in open(setup["data"]["classes"]).read().splitlines() if n]
    for w in (0, len(layout.starts) // 2, len(layout.starts) - 1):
        clip = window_views(reader.get_frames(layout.indices[w]), cfg.data, cfg.features.num_spatial_crops)
        with torch.no_grad():
            probs = model(clip).softmax(dim=1).mean(dim=0)
        ref = window_topk(probs[None], [0.0], [1.0], names, k=3)[0]
        mine = sorted((r for r in rows if int(r["window"]) == w), key=lambda r: int(r["rank"]))
        assert [r["label"] for r in mine] == list(ref.labels)
        np.testing.assert_allclose([float(r["score"]) for r in mine], ref.scores, rtol=1e-4)
    # segments: one per run of equal top-1 labels, in time order, tiling the windows' span
    top1 = [r["label"] for r in sorted(rows, key=lambda r: int(r["window"])) if r["rank"] == "1"]
    runs = [label for i, label in enumerate(top1) if i == 0 or label != top1[i - 1]]
    segs = [s for s in _rows(os.path.join(out, "segments.csv")) if s["video"] == "long"]
    assert [s["label"] for s in segs] == runs
    assert float(segs[0]["start_s"]) == 0.0 and float(segs[-1]["end_s"]) == pytest.approx(layout.ends[-1])
    assert all(float(a["end_s"]) == float(b["start_s"]) for a, b in zip(segs, segs[1:]))
    video = json.load(open(os.path.join(out, "predictions.json")))["videos"][0]
    assert [s["label"] for s in video["segments"]] == runs and video["num_windows"] == len(layout.starts)


@pytest.mark.slow
def test_rendered_video_has_the_input_frame_count_and_fps(long_run, setup):
    import av
    import decord
    from PIL import Image

    out, _ = long_run
    src, rendered = decord.VideoReader(setup["long"]), decord.VideoReader(os.path.join(out, "long.mp4"))
    assert len(rendered) == len(src) == 160
    assert rendered.get_avg_fps() == pytest.approx(src.get_avg_fps()) and src.get_avg_fps() == pytest.approx(25)
    with av.open(os.path.join(out, "long.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    a, b = src[100].asnumpy().astype(int), rendered[100].asnumpy().astype(int)
    assert np.abs(a[-20:, -40:] - b[-20:, -40:]).mean() < 6  # the picture is kept
    assert np.abs(a[:12, :40] - b[:12, :40]).mean() > 20  # the labels are drawn top left
    assert Image.open(os.path.join(out, "long_timeline.png")).size == (1200, 200)


# ----------------------------------------------------------------------------------- broken input
@pytest.mark.slow
def test_folder_mixing_good_and_broken_videos(setup):
    folder = setup["tmp"] / "mixed"
    folder.mkdir()
    for p in setup["data"]["good"][:2]:
        shutil.copy(p, folder)
    (folder / "text.mp4").write_text("not a video")
    (folder / "empty.avi").write_bytes(b"")
    cut_file(setup["data"]["good"][2], str(folder / "cut.mp4"), 0.3)
    out = str(setup["tmp"] / "mixed_out")
    proc = check(_predict(setup, str(folder), out, "--render"))
    rows = {r["video"]: r for r in _rows(os.path.join(out, "predictions.csv"))}
    assert len(rows) == 5
    good = [os.path.splitext(os.path.basename(p))[0] for p in setup["data"]["good"][:2]]
    assert all(rows[g]["pred1"] and not rows[g]["error"] for g in good)
    failed = {r["video"]: r["reason"] for r in _rows(os.path.join(out, "failed.csv"))}
    assert {"text", "empty"} <= set(failed) and failed["empty"] and failed["text"]
    assert all(os.path.isfile(os.path.join(out, g + ".mp4")) for g in good)
    assert not os.path.exists(os.path.join(out, "text.mp4"))
    assert "FAILED" in proc.stdout and "Traceback" not in proc.stderr
    # nothing readable at all: listed, then one line and status 1
    only_bad = setup["tmp"] / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.mp4").write_text("not a video")
    proc = _predict(setup, str(only_bad), str(setup["tmp"] / "only_bad_out"))
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: none of the 1 videos")
    assert "Traceback" not in proc.stderr
    assert _rows(str(setup["tmp"] / "only_bad_out" / "failed.csv"))[0]["video"] == "x"


@pytest.mark.slow
def test_locked_output_and_output_inside_input_are_one_line_errors(setup):
    out = setup["tmp"] / "locked"
    out.mkdir()
    with folder_lock(str(out)):
        proc = _predict(setup, setup["data"]["good"][0], str(out))
    assert proc.returncode == 1 and proc.stderr.startswith(
        f"error: output folder {out} is in use by another run (host {socket.gethostname()}"
    )
    assert len(proc.stderr.strip().splitlines()) == 1 and os.listdir(out) == []
    folder = os.path.dirname(setup["data"]["good"][0])
    proc = _predict(setup, folder, os.path.join(folder, "predictions"))
    assert proc.returncode == 1 and "is inside --input" in proc.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------- unit tests
def test_claim_output_refuses_another_runs_folder(tmp_path):
    run_a = claim_output(str(tmp_path), "ckpt_a.pyth", ["/v/a.mp4"])
    assert claim_output(str(tmp_path), "ckpt_a.pyth", ["/v/a.mp4"]) == run_a  # the same run again: fine
    for weights, inputs in (("ckpt_b.pyth", ["/v/a.mp4"]), ("ckpt_a.pyth", ["/v/a.mp4", "/v/b.mp4"])):
        with pytest.raises(PredictError, match="holds predictions of another run .*ckpt_a.pyth.*not overwritten"):
            claim_output(str(tmp_path), weights, inputs)
    assert json.load(open(tmp_path / "predict_run.json")) == run_a


def test_short_video_is_rendered_with_its_video_level_top3(setup, tmp_path):
    import decord

    path = setup["data"]["good"][0]
    n = len(decord.VideoReader(path))
    r = VideoResult(
        video="v", path=path, top=[(2, "c", 0.5), (0, "a", 0.3), (1, "b", 0.2)], duration_s=0.1, window_s=2.0
    )
    render_result(str(tmp_path), r)
    assert r.notes == [] and len(decord.VideoReader(str(tmp_path / "v.mp4"))) == n
    assert os.path.isfile(tmp_path / "v_timeline.png")
    unread = VideoResult(video="u", path=path, top=r.top)  # no window pass: a note, no file
    render_result(str(tmp_path), unread)
    assert unread.notes and not os.path.exists(tmp_path / "u.mp4")


def test_format_table_lists_predictions_failures_and_segments():
    windows = window_topk(np.array([[0.9, 0.1], [0.2, 0.8]]), [0.0, 1.0], [1.0, 2.0], ["a", "b"], k=2)
    ok = VideoResult(
        video="long",
        path="/x/long.mp4",
        top=[(0, "a", 0.55), (1, "b", 0.45)],
        duration_s=2.0,
        window_s=1.0,
        windows=windows,
    )
    bad = VideoResult(video="bad", path="/x/bad.mp4", error="empty file")
    lines = format_table([ok, bad], ["/x/gone.mp4"], k=2).splitlines()
    assert lines[1].split() == ["long", "a", "0.55", "b", "0.45"]
    assert lines[2].split(None, 1) == ["bad", "FAILED: empty file"]
    assert lines[3] == "long: 0.00-1.00 s a 0.90 | 1.00-2.00 s b 0.80" and lines[4] == "missing: /x/gone.mp4"
