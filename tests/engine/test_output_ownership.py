"""A tool never replaces a file it did not create (videoattn/utils/outputs.py), through the real tools:
predict (with --render), extract_features, test_net and visualize_attention refuse, in one line
naming the file, a folder holding a user's file of a name they would write, and write nothing; each
reruns into its own folder (as ``make demo`` run twice does), where every file it wrote is listed."""

import json
import os

import pytest
from evalkit import check, run

from videoattn.apps.extract import video_ids
from videoattn.utils.outputs import MANIFEST, OutputError, claim_outputs, read_manifest

USER_BYTES = b"the user's own file\n"


def _refused(proc, path, tool, hint="use another --output"):
    """The run failed with exactly one line naming ``path``, no traceback."""
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: {path} exists and was not written by {tool}; not replaced: move it away or {hint}"
    ), proc.stderr
    assert "Traceback" not in proc.stderr


def _folder_with(folder, name):
    """``folder`` holding the user's file ``name`` (and an unrelated one); returns its path."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "notes.txt"), "wb") as f:
        f.write(USER_BYTES)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(USER_BYTES)
    return path


def _untouched(folder, names):
    assert sorted(os.listdir(folder)) == sorted(names)
    for n in names:
        assert open(os.path.join(folder, n), "rb").read() == USER_BYTES


def _listed(folder, tool, users=("notes.txt",)):
    """Every file the tool left in ``folder`` (recursively) is listed as its own."""
    owned = read_manifest(str(folder))
    found = {os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names}
    assert found - {MANIFEST, *users} and found - {MANIFEST, *users} <= {n for n, t in owned.items() if t == tool}


def _predict(setup, video, out, *extra):
    return run(
        [
            "tools/predict.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            setup["ckpt"],
            "--input",
            video,
            "--output",
            str(out),
            *extra,
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["{id}.mp4", "predictions.csv"])
def test_predict_refuses_a_folder_with_a_users_file_of_its_names(setup, name):
    video = setup["data"]["good"][0]
    vid = video_ids([video])[0]
    out = str(setup["tmp"] / f"predict_{name[:3]}")
    path = _folder_with(out, name.format(id=vid))
    _refused(_predict(setup, video, out, "--render"), path, "predict")
    _untouched(out, ["notes.txt", os.path.basename(path)])


@pytest.mark.slow
def test_predict_reruns_into_its_own_folder_beside_unrelated_files(setup):
    video = setup["data"]["good"][0]
    out = str(setup["tmp"] / "predict_own")
    _folder_with(out, "portrait.mp4")  # a name predict does not write here: kept
    for _ in range(2):
        check(_predict(setup, video, out, "--render"))
    assert os.path.isfile(os.path.join(out, video_ids([video])[0] + ".mp4"))
    assert open(os.path.join(out, "portrait.mp4"), "rb").read() == USER_BYTES
    _listed(out, "predict", users=("notes.txt", "portrait.mp4"))


def _extract(setup, video, out):
    return run(
        [
            "tools/extract_features.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            setup["ckpt"],
            "--input",
            video,
            "--output",
            str(out),
        ]
    )


@pytest.mark.slow
def test_extract_features_refuses_a_users_file_and_reruns_into_its_own_folder(setup):
    video = setup["data"]["good"][0]
    vid = video_ids([video])[0]
    for name in ("index.csv", f"{vid}.npy"):  # a lone .npy (no .json) was overwritten before
        out = str(setup["tmp"] / f"features_{name[-3:]}")
        path = _folder_with(out, name)
        _refused(_extract(setup, video, out), path, "extract_features")
        _untouched(out, ["notes.txt", name])
    out = str(setup["tmp"] / "features_own")
    for _ in range(2):
        check(_extract(setup, video, out))
    _listed(out, "extract_features", users=())


@pytest.mark.slow
def test_test_net_refuses_a_users_file_in_its_test_folder(setup):
    out = setup["tmp"] / "test_net"
    args = ["tools/test_net.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"], f"output_dir={out}"]
    path = _folder_with(str(out / "test"), "metrics.json")
    _refused(run(args), path, "test_net", hint="use another output_dir")
    _untouched(str(out / "test"), ["notes.txt", "metrics.json"])
    os.remove(path)
    for _ in range(2):
        check(run(args))
    assert json.load(open(path))["num_videos"] == 5
    _listed(str(out / "test"), "test_net")


@pytest.mark.slow
def test_visualize_attention_refuses_to_replace_a_users_picture(setup):
    folder = str(setup["tmp"] / "pictures")
    mine = _folder_with(folder, "attention.png")
    args = [
        "tools/visualize_attention.py",
        "--config",
        setup["cfg"],
        "--checkpoint",
        setup["ckpt"],
        "--video",
        setup["data"]["good"][0],
    ]
    _refused(run(args + ["--output", mine]), mine, "visualize_attention")
    gif = os.path.join(folder, "notes.txt")
    _refused(
        run(args + ["--output", os.path.join(folder, "new.png"), "--gif", gif]),
        gif,
        "visualize_attention",
        hint="use another --gif",
    )
    _untouched(folder, ["notes.txt", "attention.png"])  # new.png not written either
    for _ in range(2):  # its own picture: replaced on a rerun
        check(run(args + ["--output", os.path.join(folder, "own.png")]))
    _listed(folder, "visualize_attention", users=("notes.txt", "attention.png"))


# ------------------------------------------------------------------------------------- unit tests
def test_claim_lists_names_drops_vanished_ones_and_refuses_other_tools_files(tmp_path):
    (tmp_path / "mine.csv").write_text("user")
    claim_outputs(str(tmp_path), "predict", ["a.csv", "b.csv"])
    assert read_manifest(str(tmp_path)) == {"a.csv": "predict", "b.csv": "predict"}
    (tmp_path / "a.csv").write_text("written by predict")
    claim_outputs(str(tmp_path), "predict", ["a.csv"])  # b.csv was never written: dropped
    assert read_manifest(str(tmp_path)) == {"a.csv": "predict"}
    with pytest.raises(OutputError, match=r"a.csv was written by predict, not by test_net; not replaced"):
        claim_outputs(str(tmp_path), "test_net", ["a.csv"])
    with pytest.raises(OutputError, match=r"mine.csv exists and was not written by predict"):
        claim_outputs(str(tmp_path), "predict", ["new.csv", "mine.csv"])
    assert read_manifest(str(tmp_path)) == {"a.csv": "predict"}  # a refused claim lists nothing
    for bad in (MANIFEST, "../x.csv", "/etc/x.csv"):
        with pytest.raises(OutputError, match="cannot write"):
            claim_outputs(str(tmp_path), "predict", [bad])
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(OutputError, match="is not a videoattn list of outputs; not replaced"):
        claim_outputs(str(tmp_path), "predict", ["a.csv"])
