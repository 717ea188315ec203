"""``--pretrained NAME`` through the real tools (convert_checkpoint, train_net, test_net,
extract_features, visualize_attention, predict), with the weights served by a real HTTP server on
127.0.0.1 through ``VIDEOATTN_WEIGHTS_URL`` (never the internet): a good file (downloaded once,
verified, Kinetics-400 names where the data has no class list), a wrong checksum, an unreachable
server and the offline step (the file put into the cache by hand)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from pytorchvideo.models.hub import c2d_r50, i3d_r50, slow_r50
from weightserver import WeightServer, closed_port

from videoattn.models.convert import from_pytorchvideo
from videoattn.utils.download import sidecar_path
from videoattn.utils.resources import kinetics400_classes

pytestmark = pytest.mark.slow
I3D_FILE = "I3D_8x8_R50.pyth"
# I3D_R50 at a size two CPU cores run in seconds: 4 frames, 32 px, one view
SMALL = [
    "model.num_classes=400",
    "data.num_frames=4",
    "data.sampling_rate=4",
    "data.test_crop_size=32",
    "data.train_crop_size=32",
    "data.train_jitter_scales=[32,40]",
    "data.num_workers=0",
    "device=cpu",
    "test.num_ensemble_views=1",
    "test.num_spatial_crops=1",
    "test.batch_size=2",
    "features.batch_size=4",
]
K400_CFG = "configs/kinetics400/I3D_R50.yaml"
FINETUNE_CFG = "configs/finetune/I3D_R50_folders.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args, env_extra=None) -> subprocess.CompletedProcess:
    """``python args...`` from the repository root, this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """pytorchvideo-layout files (random weights) on a local server, and the environment that
    points the tools at it with a fresh cache."""
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    states = {"i3d_r50": i3d_r50(pretrained=False).state_dict(), "c2d_r50": c2d_r50(pretrained=False).state_dict()}
    torch.save({"model_state": states["i3d_r50"]}, root / I3D_FILE)
    torch.save({"model_state": states["c2d_r50"]}, root / "C2D_8x8_R50.pyth")
    torch.save(torchvision.models.resnet18().state_dict(), root / "resnet18-f37072fd.pth")  # not the published bytes
    server = WeightServer(root)
    home = tmp_path_factory.mktemp("home")
    yield {
        "root": root,
        "server": server,
        "states": states,
        "home": home,
        "env": {"VIDEOATTN_WEIGHTS_URL": server.url, "VIDEOATTN_HOME": str(home)},
    }
    server.close()


@pytest.fixture(scope="module")
def videos(synthetic_root, tmp_path_factory):
    """Two real videos in a folder with no annotations (no class list)."""
    folder = tmp_path_factory.mktemp("unlabelled")
    for name in sorted(os.listdir(os.path.join(synthetic_root, "val")))[:2]:
        shutil.copy(os.path.join(synthetic_root, "val", name), folder)
    return str(folder)


def _error_line(proc) -> str:
    """The single line a tool printed on failure (no traceback)."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def _downloads(served, name=I3D_FILE) -> int:
    return served["server"].requests.count("/" + name)


def _no_annotations(folder):
    return [f"data.root={folder}", f"data.train_split={folder}/none.csv", "data.classes_file="]


# ------------------------------------------------------------------------------- good file
def test_convert_checkpoint_pretrained_writes_the_verified_weights(served, tmp_path):
    out = str(tmp_path / "i3d.pyth")
    proc = check(
        run(
            ["tools/convert_checkpoint.py", "--pretrained", "i3d_r50", "--config", K400_CFG, "--output", out],
            env_extra=served["env"],
        )
    )
    assert "wrote" in proc.stdout and _downloads(served) == 1
    cached = os.path.join(served["home"], "weights", I3D_FILE)
    sha = open(sidecar_path(cached)).read().split()[0]
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["meta"]["source"] == f"i3d_r50:{sha}" and ckpt["classes"] == kinetics400_classes()
    expected = from_pytorchvideo(served["states"]["i3d_r50"])
    assert set(ckpt["model_state"]) == set(expected)
    assert all(torch.equal(ckpt["model_state"][k], v) for k, v in expected.items())
    check(
        run(
            [
                "tools/convert_checkpoint.py",
                "--pretrained",
                "i3d_r50",
                "--config",
                K400_CFG,
                "--output",
                str(tmp_path / "again.pyth"),
            ],
            env_extra=served["env"],
        )
    )
    assert _downloads(served) == 1  # cached: not downloaded again


def test_predict_pretrained_on_a_folder_names_kinetics_classes(served, videos, tmp_path):
    out = str(tmp_path / "pred")
    proc = check(
        run(
            [
                "tools/predict.py",
                "--config",
                K400_CFG,
                "--pretrained",
                "i3d_r50",
                "--input",
                videos,
                "--output",
                out,
                "--top-k",
                "3",
                *SMALL,
                *_no_annotations(videos),
            ],
            env_extra=served["env"],
        )
    )
    with open(os.path.join(out, "predictions.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    k400 = set(kinetics400_classes())
    assert len(rows) == 2 and all(r[f"pred{i}"] in k400 for r in rows for i in (1, 2, 3))
    assert json.load(open(os.path.join(out, "predictions.json")))["weights"].startswith("pretrained:i3d_r50 (")
    assert rows[0]["pred1"] in proc.stdout and _downloads(served) <= 1


def test_test_net_and_visualize_with_pretrained(served, synthetic_root, tmp_path):
    out = str(tmp_path / "test")
    # a PySlowFast list: label indices, no names; 400 classes fit
    check(
        run(
            [
                "tools/test_net.py",
                "--config",
                K400_CFG,
                "--pretrained",
                "i3d_r50",
                f"output_dir={out}",
                *SMALL,
                f"data.root={synthetic_root}",
                "data.val_split=val.txt",
                "data.train_split=val.txt",
            ],
            env_extra=served["env"],
        )
    )
    metrics = json.load(open(os.path.join(out, "test", "metrics.json")))
    assert metrics["checkpoint"].startswith("pretrained:i3d_r50 (") and metrics["num_videos"] == 16
    video = os.path.join(synthetic_root, "val", sorted(os.listdir(os.path.join(synthetic_root, "val")))[0])
    png = str(tmp_path / "att.png")
    # the I3D weights under non-local and CBAM blocks (left at their identity initialisation)
    check(
        run(
            [
                "tools/visualize_attention.py",
                "--config",
                "configs/kinetics400/I3D_NL_CBAM_R50.yaml",
                "--pretrained",
                "i3d_r50",
                "--video",
                video,
                "--output",
                png,
                *SMALL,
                *_no_annotations(str(tmp_path)),
            ],
            env_extra=served["env"],
        )
    )
    assert os.path.getsize(png) > 0 and _downloads(served) <= 1


def test_extract_with_pretrained_saves_kinetics_scores(served, videos, tmp_path):
    out = str(tmp_path / "feats")
    check(
        run(
            [
                "tools/extract_features.py",
                "--config",
                K400_CFG,
                "--pretrained",
                "i3d_r50",
                "--input",
                videos,
                "--output",
                out,
                "features.save_scores=true",
                *SMALL,
                *_no_annotations(videos),
            ],
            env_extra=served["env"],
        )
    )
    assert open(os.path.join(out, "classes.txt")).read().splitlines() == kinetics400_classes()
    with open(os.path.join(out, "index.csv"), newline="") as f:
        row = next(csv.DictReader(f))
    scores = np.load(os.path.join(out, "scores", row["video"] + ".npy"))
    assert scores.shape == (int(row["num_windows"]), 400)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_inference_needs_the_pretrained_head(served, videos, tmp_path):
    proc = run(
        [
            "tools/predict.py",
            "--config",
            K400_CFG,
            "--pretrained",
            "i3d_r50",
            "--input",
            videos,
            "--output",
            str(tmp_path / "p"),
            *SMALL,
            "model.num_classes=8",
        ],
        env_extra=served["env"],
    )
    assert _error_line(proc) == (
        "checkpoint error: pretrained 'i3d_r50' has a 400-class head but model.num_classes=8; "
        "set model.num_classes=400 to run it (other class counts are for fine-tuning)"
    )


def test_train_net_starts_from_pretrained(served, synthetic_root, tmp_path):
    """The fine-tuning recipe (configs/finetune) from public weights: the head re-initialised at the
    data's class count, the frozen stem and res2 exactly the file's (weights and BN statistics)."""
    folder = tmp_path / "data"  # two classes, a folder each
    for label in ("moving left", "moving right"):
        (folder / "train" / label).mkdir(parents=True)
    with open(os.path.join(synthetic_root, "val.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("moving left", "moving right")]
    for r in rows:
        stem = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
        name = next(n for n in os.listdir(os.path.join(synthetic_root, "val")) if n.startswith(stem))
        shutil.copy(os.path.join(synthetic_root, "val", name), folder / "train" / r["label"])
    out = str(tmp_path / "out")
    check(
        run(
            [
                "tools/train_net.py",
                "--config",
                FINETUNE_CFG,  # i3d_r50 and I3D_R50 there: the C2D ones here cover another preset
                "--pretrained",
                "c2d_r50",
                f"output_dir={out}",
                *SMALL,
                "model.preset=C2D_R50",
                "model.num_classes=2",
                f"data.root={folder}",
                "data.val_split=",
                "train.eval_period=0",
                "train.batch_size=2",
                "solver.max_epoch=1",
                "solver.base_lr=1e-12",
                "solver.warmup_epochs=0",
                "solver.weight_decay=0",
                "bn.use_precise_stats=false",
            ],
            env_extra=served["env"],
        )
    )
    log = open(os.path.join(out, "train.log")).read()
    assert "initial weights: pretrained c2d_r50" in log and "head.proj.weight: left as initialised" in log
    assert "frozen stages: stem, res2 (" in log
    state = torch.load(os.path.join(out, "checkpoints", "checkpoint_epoch_00001.pyth"), weights_only=True)[
        "model_state"
    ]
    expected = from_pytorchvideo(served["states"]["c2d_r50"])
    for key in ("res3.0.conv1.weight", "res5.2.conv3.weight"):  # lr 1e-12: still the file's
        torch.testing.assert_close(state[key], expected[key], rtol=0, atol=1e-8)
    frozen = [k for k in expected if k.startswith(("stem.", "res2."))]
    assert len(frozen) == 66 and all(torch.equal(state[k], expected[k]) for k in frozen)  # BN statistics too
    assert not torch.equal(state["res3.0.bn1.running_mean"], expected["res3.0.bn1.running_mean"])  # not frozen
    assert state["head.proj.weight"].shape == (2, 2048) and _downloads(served, "C2D_8x8_R50.pyth") == 1


# ------------------------------------------------------------------------- wrong checksum
def test_wrong_checksum_through_the_tool_removes_the_file(served, tmp_path):
    home = tmp_path / "home"
    proc = run(
        [
            "tools/convert_checkpoint.py",
            "--pretrained",
            "resnet18_imagenet",
            "--config",
            K400_CFG,
            "--output",
            str(tmp_path / "r18.pyth"),
            "model.preset=",
            "model.depth=18",
            "model.num_classes=1000",
        ],
        env_extra=dict(served["env"], VIDEOATTN_HOME=str(home)),
    )
    line = _error_line(proc)
    assert line.startswith(f"error: checksum mismatch for {served['server'].url}/resnet18-f37072fd.pth: sha256 ")
    assert line.endswith("does not start with f37072fd (its file name); the download was discarded")
    assert os.listdir(home / "weights") == ["resnet18-f37072fd.pth.lock"]  # nothing kept
    assert not os.path.exists(tmp_path / "r18.pyth")


def test_a_wrong_file_put_by_hand_is_refused_and_kept(tmp_path):
    """issue 19: the cache removes only files it downloaded; a user's file under the published name
    that fails the checksum is refused in one line, and kept byte for byte."""
    cached = tmp_path / "home" / "weights" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)  # not the published bytes
    mine = cached.read_bytes()
    proc = run(
        [
            "tools/convert_checkpoint.py",
            "--pretrained",
            "resnet18_imagenet",
            "--config",
            K400_CFG,
            "--output",
            str(tmp_path / "r18.pyth"),
            "model.preset=",
            "model.depth=18",
            "model.num_classes=1000",
        ],
        env_extra={
            "VIDEOATTN_HOME": str(tmp_path / "home"),
            "VIDEOATTN_WEIGHTS_URL": f"http://127.0.0.1:{closed_port()}",
        },
    )
    line = _error_line(proc)
    assert line.startswith(f"error: checksum mismatch for {cached} from http://127.0.0.1:") and line.endswith(
        "; not removed (it was not downloaded here): move it away, then run again to download it"
    ), line
    assert cached.read_bytes() == mine and not os.path.exists(tmp_path / "r18.pyth")


# --------------------------------------------------------------------- unreachable / offline
def test_unreachable_server_then_the_file_put_by_hand(served, synthetic_root, tmp_path):
    home = tmp_path / "home"
    base = f"http://127.0.0.1:{closed_port()}"
    env = {"VIDEOATTN_WEIGHTS_URL": base, "VIDEOATTN_HOME": str(home)}
    proc = run(
        [
            "tools/train_net.py",
            "--config",
            K400_CFG,
            "--pretrained",
            "slow_r50",
            f"output_dir={tmp_path / 'o'}",
            "model.preset=SLOW_R50",
            *SMALL,
            "model.num_classes=8",
            f"data.root={synthetic_root}",
            "data.classes_file=classes.txt",
        ],
        env_extra=env,
    )
    cached = home / "weights" / "SLOW_8x8_R50.pyth"
    line = _error_line(proc)
    assert line.startswith(f"error: cannot download {base}/SLOW_8x8_R50.pyth (URLError: ")
    assert line.endswith(f"); to work offline, put the file by hand at {cached}")
    assert not os.path.exists(os.path.join(tmp_path, "o", "checkpoints"))
    # the offline step: the file put there by hand is verified (converted) and used without a server
    torch.save({"model_state": slow_r50(pretrained=False).state_dict()}, cached)
    out = str(tmp_path / "slow.pyth")
    check(
        run(
            [
                "tools/convert_checkpoint.py",
                "--pretrained",
                "slow_r50",
                "--config",
                K400_CFG,
                "--output",
                out,
                "model.preset=SLOW_R50",
            ],
            env_extra=env,
        )
    )
    assert os.path.isfile(sidecar_path(str(cached))) and os.path.isfile(out)


def test_unknown_name_is_a_one_line_config_error(tmp_path):
    proc = run(
        [
            os.path.join("tools", "predict.py"),
            "--config",
            K400_CFG,
            "--pretrained",
            "i3d_r51",
            "--input",
            str(tmp_path),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert _error_line(proc).startswith("config error: unknown pretrained weights 'i3d_r51'; choose one of c2d_r50,")
