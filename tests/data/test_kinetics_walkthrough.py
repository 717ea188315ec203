"""The Kinetics walk-through of docs/data.md, end to end with the real tools: a messy download
(full-length and already-cut videos, a broken file) -> tools/prepare_data.py --classes kinetics400
-> tools/check_data.py and tools/train_net.py on configs/kinetics400/I3D_R50.yaml (data.root
pointed at the prepared folder; only the model and clip sizes shrunk so that an epoch takes seconds
on a CPU)."""
import csv
import json
import os
import subprocess
import sys

import pytest

from data_helpers import make_broken
from prepare_helpers import long_indexed_video
from videoattn.datasets.synthetic import make_indexed_video
from videoattn.utils.resources import kinetics400_classes
from videoattn.utils.serialization import load_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["model.depth=18", "model.base_channels=8", "data.num_frames=4", "data.sampling_rate=4",
        "data.train_jitter_scales=[32,40]", "data.train_crop_size=32", "data.test_crop_size=32", "data.num_workers=0",
        "train.batch_size=2", "test.batch_size=2", "solver.max_epoch=1", "solver.warmup_epochs=0", "device=cpu",
        "train.eval_period=1", "data.decode_timeout=60"]


def _tool(name, *args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", name), *args], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_download_to_train_net_with_the_shipped_kinetics400_config(tmp_path):
    raw = tmp_path / "raw"
    (raw / "full").mkdir(parents=True)
    (raw / "cut").mkdir()
    long_indexed_video(str(raw / "full" / "yt_A.mp4"), 12, 30)                      # full-length: cut here
    make_indexed_video(str(raw / "cut" / "yt_B_000004_000007.mp4"), 90, 30, 160, 96)  # already cut: kept whole
    long_indexed_video(str(raw / "full" / "yt_C.mkv"), 5, 25)
    make_broken(str(raw / "full" / "yt_D.mp4"), "empty", "")
    (tmp_path / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                        "abseiling,yt_A,0,3,train\nzumba,yt_A,6,9,train\n"
                                        "abseiling,yt_B,4,7,train\nyoga,yt_C,1,4,train\nzumba,yt_D,0,3,train\n")
    (tmp_path / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                      "zumba,yt_A,9,12,val\nyoga,yt_C,0,3,val\n")
    data = tmp_path / "kinetics400"
    r = _tool("prepare_data.py", "--annotations", str(tmp_path / "train.csv"), str(tmp_path / "val.csv"),
              "--source", str(raw), "--output", str(data), "--classes", "kinetics400", "--short-side", "64",
              "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    with open(data / "failed.csv", newline="") as f:
        assert [row[1] for row in list(csv.reader(f))[1:]] == ["unreadable"]      # yt_D, the empty file
    assert (data / "classes.txt").read_text().splitlines() == kinetics400_classes()

    cfg = os.path.join(REPO, "configs", "kinetics400", "I3D_R50.yaml")
    common = [f"data.root={data}", f"output_dir={tmp_path / 'out'}", *TINY]
    r = _tool("check_data.py", "--config", cfg, "--split", "train", "--workers", "2", "--no-progress", *common)
    assert r.returncode == 0 and "4 ok, 0 broken, 0 missing" in r.stdout, r.stdout + r.stderr

    r = _tool("train_net.py", "--config", cfg, *common)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    epoch = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl") if '"kind": "epoch"' in line]
    assert [(e["clips"], e["val_num_clips"], e["skipped"]) for e in epoch] == [(4, 2, 0)], epoch
    state = load_file(str(tmp_path / "out" / "checkpoints" / "checkpoint_epoch_00001.pyth"))["model_state"]
    assert [tuple(v.shape) for k, v in state.items() if k.endswith("weight") and v.ndim == 2] == [(400, 512 // 8)]
