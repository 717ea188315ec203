"""NaN and inf are never scored as results (issue 19.5), through the real tools.

Weights holding NaN or inf are refused when they are loaded, naming the tensors. Logits that are
not finite although the weights are come from a real input: with ``data.mean=[0,0,0]`` and
``data.std=[1e-40]*3`` (finite, > 0: the config accepts them) every lit pixel normalises past
float32's largest value, so a real video gives inf inputs and NaN logits, while a black video
(all pixels 0) normalises to 0 and scores normally. The tools mark the non-finite videos, leave
them out of the accuracy, write everything else and exit 1 with one line.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from evalkit import make_random_checkpoint, run, write_config
from pyslowfast_names import to_pyslowfast

from videoattn.config import load_config
from videoattn.datasets.synthetic import encode_video

OVERFLOW = ["data.mean=[0.0,0.0,0.0]", "data.std=[1e-40,1e-40,1e-40]"]
BLACK_ID = "BLACKvideo"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _one_line(proc) -> str:
    """The tool failed with exactly one ``error:`` line and no traceback; that line."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def kit(setup):
    """Two real videos and a black one (its own annotation row); finite, NaN and one-inf checkpoints."""
    tmp = setup["tmp"]
    data = dict(setup["data"], root=str(tmp / "data"))
    shutil.copytree(setup["data"]["root"], data["root"])
    good = sorted(os.path.join(data["root"], "val", os.path.basename(p)) for p in setup["data"]["good"])[:2]
    rows = _rows(os.path.join(data["root"], "val.csv"))
    keep = [r for r in rows if any(os.path.basename(g).startswith(r["youtube_id"]) for g in good)]
    black = os.path.join(data["root"], "val", f"{BLACK_ID}_000000_000001.mp4")
    encode_video(black, np.zeros((30, 48, 64, 3), np.uint8), 30)
    with open(os.path.join(data["root"], "val.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep + [dict(keep[0], youtube_id=BLACK_ID, time_start="0", time_end="1")])
    os.makedirs(tmp / "videos")
    for p in good + [black]:
        shutil.copy(p, tmp / "videos")
    cfg_path = write_config(str(tmp / "cfg.yaml"), data)
    cfg = load_config(cfg_path)
    finite = make_random_checkpoint(cfg, str(tmp / "finite.pyth"))
    ckpt = torch.load(finite, weights_only=True)
    nan = dict(
        ckpt,
        model_state={
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in ckpt["model_state"].items()
        },
    )
    torch.save(nan, str(tmp / "nan.pyth"))
    one_inf = dict(ckpt, model_state=dict(ckpt["model_state"]))
    one_inf["model_state"]["head.proj.bias"] = one_inf["model_state"]["head.proj.bias"].clone()
    one_inf["model_state"]["head.proj.bias"][0] = float("inf")
    torch.save(one_inf, str(tmp / "one_inf.pyth"))
    return {
        "tmp": tmp,
        "cfg": cfg_path,
        "finite": finite,
        "nan": str(tmp / "nan.pyth"),
        "one_inf": str(tmp / "one_inf.pyth"),
        "videos": str(tmp / "videos"),
        "good": good,
        "black": black,
        "nan_state": nan["model_state"],
    }


def _tool(kit, tool, ckpt, out, *extra):
    args = [f"tools/{tool}.py", "--config", kit["cfg"], "--checkpoint", ckpt]
    if tool in ("predict", "extract_features"):
        args += ["--input", kit["videos"], "--output", out]
    elif tool == "visualize_attention":
        args += ["--video", kit["good"][0], "--output", os.path.join(out, "a.png")]
    return run(args + [f"output_dir={out}", *extra])


# ------------------------------------------------------------------------------------- weights
@pytest.mark.slow
@pytest.mark.parametrize("tool", ["test_net", "predict", "extract_features", "visualize_attention"])
def test_nan_weights_are_refused_at_load(kit, tool):
    out = str(kit["tmp"] / f"nan_{tool}")
    line = _one_line(_tool(kit, tool, kit["nan"], out))
    n = sum(v.is_floating_point() for v in kit["nan_state"].values())
    assert f"{kit['nan']}: {n} of {len(kit['nan_state'])} weight tensors hold NaN or inf values (" in line, line
    first = sorted(k for k, v in kit["nan_state"].items() if v.is_floating_point())[0]
    assert first in line and f"and {n - 4} more" in line, line
    assert not any(
        os.path.exists(os.path.join(out, *p))
        for p in [("test", "metrics.json"), ("predictions.csv",), ("index.csv",), ("a.png",)]
    )


@pytest.mark.slow
def test_one_inf_weight_is_named(kit):
    line = _one_line(_tool(kit, "test_net", kit["one_inf"], str(kit["tmp"] / "one_inf")))
    assert line.endswith(
        f"{kit['one_inf']}: 1 of {len(kit['nan_state'])} weight tensors hold NaN or inf values "
        "(head.proj.bias); refusing to use them"
    ), line


@pytest.mark.slow
def test_convert_checkpoint_refuses_nan_weights(kit):
    state = {k: v for k, v in kit["nan_state"].items() if ".cbam." not in k}
    source = str(kit["tmp"] / "pyslowfast_nan.pyth")
    torch.save({"epoch": 1, "model_state": to_pyslowfast(state)}, source)
    out = kit["tmp"] / "converted_nan.pyth"
    proc = run(
        [
            "tools/convert_checkpoint.py",
            "--source",
            "pyslowfast",
            "--input",
            source,
            "--config",
            kit["cfg"],
            "--output",
            str(out),
        ]
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    err = proc.stderr
    assert "weight tensors hold NaN or inf values" in err and "(head.projection.bias, " in err, err[-3000:]
    assert not out.exists()


# ------------------------------------------------------------------------------------- logits
@pytest.mark.slow
def test_test_net_marks_non_finite_videos_and_exits_1(kit):
    out = str(kit["tmp"] / "overflow_test")
    line = _one_line(_tool(kit, "test_net", kit["finite"], out, *OVERFLOW))
    assert "2 of 3 readable videos had NaN or inf logits (12 views): marked non_finite in" in line, line
    rows = {os.path.basename(r["video"]).split("_")[0]: r for r in _rows(os.path.join(out, "test", "predictions.csv"))}
    assert rows[BLACK_ID]["non_finite"] == "0" and rows[BLACK_ID]["pred1"] != ""
    others = [r for k, r in rows.items() if k not in (BLACK_ID, "BROKENvideo0")]
    assert len(others) == 2 and all(r["non_finite"] == "1" and r["pred1"] == r["correct"] == "" for r in others)
    with open(os.path.join(out, "test", "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_non_finite"] == 2 and metrics["num_non_finite_views"] == 12 and metrics["num_videos"] == 1
    assert metrics["video_top1"] in (0.0, 1.0) and metrics["num_clips"] == 6  # the black video's views only
    assert sorted(os.path.basename(v["path"]).split("_")[0] for v in metrics["non_finite"]) == sorted(
        os.path.basename(g).split("_")[0] for g in kit["good"]
    )


@pytest.mark.slow
def test_predict_marks_non_finite_videos_and_exits_1(kit):
    out = str(kit["tmp"] / "overflow_predict")
    line = _one_line(_tool(kit, "predict", kit["finite"], out, *OVERFLOW))
    assert "2 of 3 videos had NaN or inf scores" in line and "marked non_finite in" in line, line
    rows = {r["video"].split("_")[0]: r for r in _rows(os.path.join(out, "predictions.csv"))}
    assert rows[BLACK_ID]["non_finite"] == "0" and rows[BLACK_ID]["pred1"] and "nan" not in rows[BLACK_ID]["score1"]
    others = [r for k, r in rows.items() if k != BLACK_ID]
    assert all(r["non_finite"] == "1" and r["pred1"] == "" and "NaN or inf logits" in r["error"] for r in others)
    assert sorted(r["video"].split("_")[0] for r in _rows(os.path.join(out, "failed.csv"))) == sorted(
        r["video"].split("_")[0] for r in others
    )


@pytest.mark.slow
def test_extract_features_writes_no_non_finite_features_and_exits_1(kit):
    out = str(kit["tmp"] / "overflow_features")
    line = _one_line(_tool(kit, "extract_features", kit["finite"], out, *OVERFLOW, "features.save_scores=true"))
    assert "2 videos had NaN or inf features or scores" in line, line
    index = _rows(os.path.join(out, "index.csv"))
    assert [r["video"].split("_")[0] for r in index] == [BLACK_ID]
    assert np.isfinite(np.load(os.path.join(out, index[0]["features"]))).all()
    failed = _rows(os.path.join(out, "failed.csv"))
    assert len(failed) == 2 and all(r["reason"].startswith("NaN or inf features/scores in") for r in failed)
    assert not any(os.path.exists(os.path.join(out, r["video"] + ".npy")) for r in failed)


@pytest.mark.slow
def test_visualize_attention_writes_no_prediction_or_faithfulness_and_exits_1(kit):
    out = str(kit["tmp"] / "overflow_visualize")
    os.makedirs(out)
    line = _one_line(_tool(kit, "visualize_attention", kit["finite"], out, *OVERFLOW))
    assert f"{kit['good'][0]}: NaN or inf logits; wrote {os.path.join(out, 'a.png')}, " in line, line
    with open(os.path.join(out, "a.json")) as f:
        written = json.load(f)
    assert written["prediction"] is None and written["prediction_note"] == "NaN or inf logits: no prediction"
    assert written["channel_view"] is None  # the inf input makes the channel weights NaN too
    assert written["channel_view_note"].startswith("res3.1.cbam has NaN or inf channel weights: no channel view")
