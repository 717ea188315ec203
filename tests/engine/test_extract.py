"""Feature extraction: window layout by hand, real videos end to end, resume after a real
SIGKILL mid-write, broken videos reported, and 2 torchrun/gloo ranks equal to 1 process."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from evalkit import BROKEN_ID, check, run, window_views

from videoattn.apps.extract import list_inputs, video_ids
from videoattn.config import load_config
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.data.windows import stride_seconds, window_layout


@pytest.mark.parametrize(
    "protocol, at_30, at_15",
    [
        # 4 frames x rate 5 at target 30 fps: a 20-frame window (videoattn, pyslowfast); mmaction2 counts
        # 5 of the video's own frames at any fps
        ("videoattn", [[0, 5, 10, 15], [15, 20, 25, 30], [30, 35, 40, 45]], [[0, 2, 5, 7], [7, 9, 12, 14]]),
        ("pyslowfast", [[0, 6, 12, 19], [15, 21, 27, 34], [30, 36, 42, 49]], [[0, 3, 6, 9], [7, 10, 13, 16]]),
        ("mmaction2", [[0, 5, 10, 15], [15, 20, 25, 30], [30, 35, 40, 45]], [[0, 5, 10, 15], [7, 12, 17, 22]]),
    ],
)
def test_window_layout_hand_computed(protocol, at_30, at_15):
    # 60 frames at 30 fps (2 s), stride 0.5 s = 15 frames -> starts 0, 15, 30 (a 4th at 45 would need frame 60+)
    # videoattn: samples 5 frames apart; pyslowfast: linspace(s, s + 19, 4) (PySlowFast's temporal_sampling)
    p, spec = Protocol(protocol), ClipSpec(4, 5)
    w = window_layout(p, spec, 60, 30.0, stride_s=0.5)
    assert w.starts == [0.0, 0.5, 1.0] and w.indices == at_30 and w.repeated == [0, 0, 0]
    assert w.ends == pytest.approx([20 / 30, 0.5 + 20 / 30, 1.0 + 20 / 30])
    # at 15 fps: videoattn every 2.5th frame (floor), pyslowfast linspace over 10 frames; stride 7.5 frames
    w = window_layout(p, spec, 30, 15.0, stride_s=0.5)
    assert w.indices[:2] == at_15
    # a video shorter than one window: one window, samples past the end counted
    w = window_layout(p, spec, 5, 30.0, stride_s=0.5)
    assert (
        w.indices == {"videoattn": [[0, 4, 4, 4]], "pyslowfast": [[0, 4, 4, 4]], "mmaction2": [[0, 0, 0, 0]]}[protocol]
    )
    assert w.repeated == [3]


def test_stride_options():
    cfg = load_config(None, ["data.num_frames=8", "data.sampling_rate=8", "data.target_fps=30"])
    assert stride_seconds(cfg.data, cfg.features) == 0.0  # default: one window
    assert window_layout(Protocol(), ClipSpec(8, 8), 300, 25.0).stride_s == pytest.approx(64 / 30)
    assert window_layout(Protocol("mmaction2"), ClipSpec(8, 8), 300, 25.0).stride_s == pytest.approx(64 / 25)
    cfg = load_config(None, ["features.stride_frames=15", "data.target_fps=30"])
    assert stride_seconds(cfg.data, cfg.features) == pytest.approx(0.5)
    cfg = load_config(None, ["features.stride_frames=15", "features.stride_seconds=1.25"])
    assert stride_seconds(cfg.data, cfg.features) == 1.25


def test_video_ids_are_unique():
    assert video_ids(["/a/x.mp4", "/a/y.avi"]) == ["x", "y"]
    assert video_ids(["/d/a/x.mp4", "/d/b/x.mp4", "/d/b/z.mp4"]) == ["a__x", "b__x", "z"]


def test_list_inputs_forms(setup):
    cfg = load_config(setup["cfg"])
    root = setup["data"]["root"]
    folder, missing = list_inputs(cfg.data, os.path.join(root, "val"))
    assert len(folder) == 6 and not missing  # 5 good + the corrupt file
    csv_paths, missing = list_inputs(cfg.data, os.path.join(root, "val.csv"))
    assert sorted(csv_paths) == sorted(folder) and len(missing) == 1
    lst = setup["tmp"] / "list.txt"
    lst.write_text(setup["data"]["good"][0] + "\n" + "nothere.mp4\n")
    paths, missing = list_inputs(cfg.data, str(lst))
    assert paths == [setup["data"]["good"][0]] and missing[0].endswith("nothere.mp4")
    assert list_inputs(cfg.data, setup["data"]["good"][1]) == ([setup["data"]["good"][1]], [])


def _extract(setup, out, nproc=0, extra=(), fault=()):
    """The real tool; ``fault``: arguments of tests/engine/fault_worker.py that wrap it."""
    wrapper = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_worker.py"), *fault] if fault else []
    return run(
        [
            *wrapper,
            "tools/extract_features.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            setup["ckpt"],
            "--input",
            os.path.join(setup["data"]["root"], "val.csv"),
            "--output",
            out,
            *extra,
        ],
        nproc=nproc,
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def resumed(setup):
    """A run SIGKILLed while writing its 3rd video, then restarted."""
    out = str(setup["tmp"] / "resume")
    killed = _extract(setup, out, fault=("kill_after_saves", "2"))
    after_kill = sorted(os.listdir(out))
    mtimes = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in after_kill if n.endswith(".npy")}
    restarted = check(_extract(setup, out))
    return out, killed, after_kill, mtimes, restarted


@pytest.mark.slow
def test_killed_run_leaves_no_partial_file_and_resumes(resumed, setup):
    out, killed, after_kill, mtimes, restarted = resumed
    assert killed.returncode != 0  # really died (SIGKILL)
    done = [n for n in after_kill if n.endswith(".npy") and not n.startswith(".")]
    assert len(done) == 2 and "index.csv" not in after_kill
    assert any(n.endswith(".tmp") for n in after_kill)  # the 3rd video's half-written temp file
    for n in done:  # what exists is complete
        assert np.load(os.path.join(out, n)).ndim == 2
    final = sorted(os.listdir(out))
    assert not any(n.endswith(".tmp") for n in final)
    assert all(os.stat(os.path.join(out, n)).st_mtime_ns == t for n, t in mtimes.items())  # not redone
    assert "2 already there" in restarted.stdout
    rows = _rows(os.path.join(out, "index.csv"))
    assert len(rows) == 5 and BROKEN_ID not in " ".join(r["video"] for r in rows)
    for r in rows:
        feats = np.load(os.path.join(out, r["features"]))
        meta = json.load(open(os.path.join(out, r["windows"])))
        assert feats.shape == (int(r["num_windows"]), 128) and feats.dtype == np.float32
        assert len(meta["starts_s"]) == len(meta["ends_s"]) == feats.shape[0]
        assert np.isfinite(feats).all() and feats.std() > 0


@pytest.mark.slow
def test_broken_and_missing_videos_reported(resumed, setup):
    out = resumed[0]
    failed = _rows(os.path.join(out, "failed.csv"))
    reasons = {r["path"]: r["reason"] for r in failed}
    assert setup["data"]["broken"] in reasons and reasons[setup["data"]["broken"]]
    assert any("missing" in r for r in reasons.values()) and len(failed) == 2


@pytest.mark.slow
def test_features_equal_a_direct_model_call(resumed, setup):
    """One window recomputed by hand: decode its frames, test transform, model.extract."""
    from videoattn.data import open_video
    from videoattn.engine.inference import build_inference_model

    out = resumed[0]
    row = _rows(os.path.join(out, "index.csv"))[1]
    meta = json.load(open(os.path.join(out, row["windows"])))
    cfg = load_config(setup["cfg"])
    model = build_inference_model(cfg, setup["ckpt"], torch.device("cpu"))
    frames = open_video(row["path"]).get_frames(meta["frame_indices"][-1])
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(window_views(frames, cfg.data)), pre_logits=True)[0].numpy()
    np.testing.assert_allclose(np.load(os.path.join(out, row["features"]))[-1], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_ranks_write_the_same_files(resumed, setup):
    out1 = resumed[0]
    out2 = str(setup["tmp"] / "two")
    check(_extract(setup, out2, nproc=2, extra=["data.num_workers=2"]))  # 2 decoding workers per rank
    names1 = sorted(n for n in os.listdir(out1) if not n.startswith("."))
    assert names1 == sorted(n for n in os.listdir(out2) if not n.startswith("."))
    for n in names1:
        if n.endswith(".npy"):
            np.testing.assert_allclose(np.load(os.path.join(out1, n)), np.load(os.path.join(out2, n)), atol=1e-5)
        else:
            assert open(os.path.join(out1, n)).read() == open(os.path.join(out2, n)).read(), n


@pytest.mark.slow
def test_float16_stage_features_without_crop_averaging(setup):
    from videoattn.apps.extract import extract_features

    out = str(setup["tmp"] / "res4")
    cfg = load_config(
        setup["cfg"],
        [
            "features.layer=res4",
            "features.dtype=float16",
            "features.num_spatial_crops=3",
            "features.average_crops=false",
            "features.stride_seconds=0",
        ],
    )
    summary = extract_features(cfg, setup["data"]["good"][0], out, setup["ckpt"])
    assert summary["num_done"] == 1
    row = _rows(os.path.join(out, "index.csv"))[0]
    feats = np.load(os.path.join(out, row["features"]))
    assert feats.dtype == np.float16 and feats.shape == (int(row["num_windows"]), 3, 64)  # res4 of R18/16: 64 ch
    assert float(row["stride_s"]) == pytest.approx(16 / 30)


# ------------------------------------------------------------------ hostile inputs (issue 9)
def test_video_ids_never_collide_and_depend_only_on_the_inputs():
    assert video_ids(["/d/a/x.mp4", "/d/a/x.avi", "/d/b/x.mp4"]) == ["a__x_mp4", "a__x_avi", "b__x"]
    paths = ["/d/a__b/y.mp4", "/d/a/b/y.mp4", "/d/z.mp4"]  # path-derived names collide too: hashed
    ids = video_ids(paths)
    assert ids[0].startswith("a__b__y_mp4-") and ids[1].startswith("a__b__y_mp4-") and ids[0] != ids[1]
    assert ids[2] == "z" and video_ids(paths) == ids  # a function of the inputs: same on a re-run
    ids = video_ids(["/d/a/x.mp4", "/d/b/x.mp4", "/d/a__x.mp4"])  # a stem equal to a derived name
    assert ids[1] == "b__x" and len(set(ids)) == 3 and all(i.startswith("a__x_mp4-") for i in (ids[0], ids[2]))


@pytest.fixture(scope="module")
def odd(setup):
    """A folder of inputs a hostile user would bring: a faststart mp4 cut at half its bytes, one cut
    to less than a window, a video shorter than one window, x.mp4 next to x.avi, two paths whose
    derived names collide, and a symlink cycle. All frame-indexed (frames show their index)."""
    from videokit import cut_file, decodable_indexed_frames

    from videoattn.datasets.synthetic import make_indexed_video

    folder = setup["tmp"] / "odd"
    for sub in ("dup", "p__q", "p/q"):
        (folder / sub).mkdir(parents=True)
    full = str(setup["tmp"] / "full150.mp4")
    make_indexed_video(full, 150, 30, container_options={"movflags": "+faststart"})
    cut_file(full, str(folder / "cut.mp4"), 0.5)
    cut_file(full, str(folder / "tiny_cut.mp4"), 0.05)
    make_indexed_video(str(folder / "short.mp4"), 10, 30)
    make_indexed_video(str(folder / "dup" / "x.mp4"), 60, 30)
    make_indexed_video(str(folder / "dup" / "x.avi"), 45, 30)
    make_indexed_video(str(folder / "p__q" / "y.mp4"), 40, 30)
    make_indexed_video(str(folder / "p" / "q" / "y.mp4"), 50, 30)
    os.symlink("..", folder / "dup" / "up")  # dup/up -> the folder itself
    out = str(setup["tmp"] / "odd_out")
    first = run(
        [
            "tools/extract_features.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            setup["ckpt"],
            "--input",
            str(folder),
            "--output",
            out,
        ],
        timeout=240,
    )
    again = run(
        [
            "tools/extract_features.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            setup["ckpt"],
            "--input",
            str(folder),
            "--output",
            out,
        ],
        timeout=240,
    )
    return {
        "folder": folder,
        "out": out,
        "first": check(first),
        "again": check(again),
        "real": decodable_indexed_frames(str(folder / "cut.mp4")),
        "tiny": decodable_indexed_frames(str(folder / "tiny_cut.mp4")),
    }


@pytest.mark.slow
def test_video_cut_short_gets_features_only_for_windows_that_decode(odd, setup):
    from videoattn.data import open_video
    from videoattn.datasets.synthetic import read_frame_index
    from videoattn.engine.inference import build_inference_model

    out, real, cut = odd["out"], odd["real"], str(odd["folder"] / "cut.mp4")
    meta = json.load(open(os.path.join(out, "cut.json")))
    feats = np.load(os.path.join(out, "cut.npy"))
    protocol, spec = Protocol("pyslowfast"), ClipSpec(4, 4)
    whole = window_layout(protocol, spec, real, 30.0, 0.3, whole_only=True)
    full = window_layout(protocol, spec, 150, 30.0, 0.3)
    assert 0 < len(whole.starts) < len(full.starts) and whole.indices == full.indices[: len(whole.starts)]
    assert meta["frame_indices"] == whole.indices and feats.shape[0] == len(whole.starts) == meta["num_windows"]
    assert max(max(w) for w in meta["frame_indices"]) < real  # no frame past the real end
    assert (meta["truncated"], meta["num_video_frames"], meta["declared_frames"]) == (True, real, 150)
    assert meta["repeated_samples"] == [0] * len(whole.starts)
    rows = _rows(os.path.join(out, "truncated.csv"))
    assert [(r["video"], int(r["decoded_frames"]), int(r["declared_frames"]), r["declared_s"]) for r in rows] == [
        ("cut", real, 150, "5.000")
    ]
    # the last window's features are those of its real frames (pixels show the indices)
    frames = open_video(cut).get_frames(meta["frame_indices"][-1])
    assert [read_frame_index(f) for f in frames.numpy()] == meta["frame_indices"][-1]
    cfg = load_config(setup["cfg"])
    model = build_inference_model(cfg, setup["ckpt"], torch.device("cpu"))
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(window_views(frames, cfg.data)), pre_logits=True)[0].numpy()
    np.testing.assert_allclose(feats[-1], ref, rtol=1e-4, atol=1e-5)
    failed = {r["video"]: r["reason"] for r in _rows(os.path.join(out, "failed.csv"))}
    assert list(failed) == ["tiny_cut"] and f"only {odd['tiny']} of 150 declared frames" in failed["tiny_cut"]
    assert "less than one window" in failed["tiny_cut"]


@pytest.mark.slow
def test_short_video_repeats_its_last_frame_and_says_so(odd):
    meta = json.load(open(os.path.join(odd["out"], "short.json")))
    # PySlowFast's clip: linspace(0, 15, 4) = 0, 5, 10, 15 over 10 frames -> 10 and 15 are past the end
    assert meta["frame_indices"] == [[0, 5, 9, 9]] and meta["repeated_samples"] == [2]
    assert meta["truncated"] is False and meta["declared_frames"] == meta["num_video_frames"] == 10


@pytest.mark.slow
def test_every_input_gets_its_own_files_and_the_counts_add_up(odd):
    out, folder = odd["out"], odd["folder"]
    rows = _rows(os.path.join(out, "index.csv"))
    names = [r["video"] for r in rows]
    inputs = {str(folder / p) for p in ("cut.mp4", "short.mp4", "dup/x.mp4", "dup/x.avi", "p__q/y.mp4", "p/q/y.mp4")}
    assert len(names) == len(set(names)) == 6 and {r["path"] for r in rows} == inputs  # the cycle listed nothing twice
    assert {"dup__x_mp4", "dup__x_avi"} <= set(names)
    assert sum(n.startswith("p__q__y_mp4-") for n in names) == 2
    for r in rows:
        meta = json.load(open(os.path.join(out, r["windows"])))
        assert meta["path"] == r["path"] and np.load(os.path.join(out, r["features"])).shape[0] == meta["num_windows"]
    assert sorted(n for n in os.listdir(out) if n.endswith(".npy")) == sorted(n + ".npy" for n in names)
    assert (
        "6 of 7 videos done (6 written now, 0 already there), 1 failed, 0 missing; 1 cut short" in odd["first"].stdout
    )
    assert "symlink cycle" in odd["first"].stdout and os.path.join(str(folder), "dup", "up") in odd["first"].stdout
    assert "6 of 7 videos done (0 written now, 6 already there), 1 failed, 0 missing" in odd["again"].stdout


@pytest.mark.slow
def test_another_input_never_overwrites_files_of_the_same_name(odd, setup, tmp_path):
    from videoattn.datasets.synthetic import make_indexed_video

    other = tmp_path / "short.mp4"  # same name, another video
    make_indexed_video(str(other), 20, 30)
    before = open(os.path.join(odd["out"], "short.npy"), "rb").read()
    proc = check(
        run(
            [
                "tools/extract_features.py",
                "--config",
                setup["cfg"],
                "--checkpoint",
                setup["ckpt"],
                "--input",
                str(other),
                "--output",
                odd["out"],
            ]
        )
    )
    assert open(os.path.join(odd["out"], "short.npy"), "rb").read() == before
    assert json.load(open(os.path.join(odd["out"], "short.json")))["path"] == str(odd["folder"] / "short.mp4")
    failed = _rows(os.path.join(odd["out"], "failed.csv"))
    assert [r["path"] for r in failed] == [str(other)] and "already holds the features of" in failed[0]["reason"]
    assert "0 of 1 videos done (0 written now, 0 already there), 1 failed, 0 missing" in proc.stdout


@pytest.mark.slow
def test_no_class_list_needed_and_each_video_once(setup, tmp_path):
    """Labels are irrelevant to features: a Kinetics CSV (saved with a BOM, one row twice) whose
    labels are in no class list, with no data.classes_file and the default (absent) train split;
    also a plain list of video paths."""
    cfg = tmp_path / "nolabels.yaml"
    cfg.write_text(
        f"model:\n  preset: I3D_NL_CBAM_R18\n  num_classes: 8\n  dropout: 0.0\n"
        f"data:\n  root: {setup['data']['root']}\n  num_frames: 4\n  sampling_rate: 4\n"
        f"  test_crop_size: 64\n  num_workers: 0\nfeatures:\n  stride_seconds: 0.3\ndevice: cpu\n"
    )
    rows = open(os.path.join(setup["data"]["root"], "val.csv")).read().splitlines()
    relabelled = [rows[0]] + [",".join(["no such class"] + r.split(",")[1:]) for r in rows[1:]] + [rows[1]]
    (tmp_path / "videos.csv").write_bytes(b"\xef\xbb\xbf" + ("\n".join(relabelled) + "\n").encode())
    proc = check(
        run(
            [
                "tools/extract_features.py",
                "--config",
                str(cfg),
                "--checkpoint",
                setup["ckpt"],
                "--input",
                str(tmp_path / "videos.csv"),
                "--output",
                str(tmp_path / "a"),
            ]
        )
    )
    assert "5 of 7 videos done (5 written now, 0 already there), 1 failed, 1 missing" in proc.stdout
    assert "1 duplicate rows ignored" in proc.stdout
    (tmp_path / "list.txt").write_text("\n".join(setup["data"]["good"][:2] + [setup["data"]["good"][0]]) + "\n")
    proc = check(
        run(
            [
                "tools/extract_features.py",
                "--config",
                str(cfg),
                "--checkpoint",
                setup["ckpt"],
                "--input",
                str(tmp_path / "list.txt"),
                "--output",
                str(tmp_path / "b"),
            ]
        )
    )
    assert "2 of 2 videos done (2 written now, 0 already there), 0 failed, 0 missing" in proc.stdout


@pytest.mark.parametrize("ext", ["mp4", "webm", "avi"])
def test_window_stream_keeps_whole_real_windows_of_a_file_cut_short(setup, tmp_path, ext):
    """The decoded windows themselves (no model): whether the reader learns the real end at the
    first chunk, a later one, or from the header (decord), the chunks sent are exactly the whole
    windows of the frames that decode (that those frames are real: test_decoding)."""
    from videokit import cut_file, decodable_indexed_frames

    from videoattn.data.windows import WindowChunk, WindowDone, WindowStream
    from videoattn.datasets.synthetic import make_indexed_video

    full, cut = str(tmp_path / f"full.{ext}"), str(tmp_path / f"cut.{ext}")
    make_indexed_video(full, 150, 30, container_options={"movflags": "+faststart"} if ext == "mp4" else None)
    cut_file(full, cut, 0.6)
    real = decodable_indexed_frames(cut)
    whole = window_layout(Protocol("pyslowfast"), ClipSpec(4, 4), real, 30.0, 0.3, whole_only=True)
    for bs in (1, 4, 64):
        cfg = load_config(setup["cfg"], [f"features.batch_size={bs}", "data.test_crop_size=64"])
        items = list(WindowStream([(0, cut)], cfg.data, cfg.features))
        done = items[-1]
        assert isinstance(done, WindowDone) and done.window.indices == whole.indices and done.declared_frames == 150
        assert all(isinstance(it, WindowChunk) for it in items[:-1])
        assert sum(it.num_windows for it in items[:-1]) == len(whole.starts)
        assert [it.chunk for it in items[:-1]] == list(range(len(items) - 1))
