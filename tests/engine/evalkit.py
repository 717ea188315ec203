"""Helpers for the evaluation / feature / attention tests (not a test module).

A tiny test set built from the session's ``synthetic_root``: an odd number of real videos, one
corrupt file and one annotation row whose file is missing; a small config; a checkpoint with
random (but non-degenerate) weights written by the real checkpoint code.
"""

import csv
import os
import shutil
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROKEN_ID = "BROKENvideo0"
MISSING_ID = "MISSINGvideo"


def make_eval_root(synthetic_root: str, dest: str, num_good: int = 5) -> dict:
    """Copy ``num_good`` val videos (different classes first) into ``dest`` plus a corrupt one."""
    os.makedirs(os.path.join(dest, "val"), exist_ok=True)
    with open(os.path.join(synthetic_root, "val.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    rows = sorted(rows, key=lambda r: rows.index(r) % 2)[:num_good]  # one per class before repeats
    good = []
    for r in rows:
        stem = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
        src = [n for n in os.listdir(os.path.join(synthetic_root, "val")) if n.startswith(stem)][0]
        shutil.copy(os.path.join(synthetic_root, "val", src), os.path.join(dest, "val", src))
        good.append(os.path.join(dest, "val", src))
    broken = os.path.join(dest, "val", f"{BROKEN_ID}_000000_000010.mp4")
    with open(broken, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))  # mp4 signature, garbage inside
    label = rows[0]["label"]
    with open(os.path.join(dest, "val.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for r in rows[:2]:
            w.writerow([r["label"], r["youtube_id"], r["time_start"], r["time_end"], "val"])
        w.writerow([label, BROKEN_ID, 0, 10, "val"])
        for r in rows[2:]:
            w.writerow([r["label"], r["youtube_id"], r["time_start"], r["time_end"], "val"])
        w.writerow([label, MISSING_ID, 0, 10, "val"])
    return {"root": dest, "good": good, "broken": broken, "classes": os.path.join(synthetic_root, "classes.txt")}


def write_config(path: str, data: dict, extra: str = "") -> str:
    with open(path, "w") as f:
        f.write(f"""output_dir: {os.path.join(os.path.dirname(path), "output")}
model:
  preset: I3D_NL_CBAM_R18
  num_classes: 8
  dropout: 0.0
data:
  root: {data["root"]}
  train_split: val.csv
  val_split: val.csv
  classes_file: {data["classes"]}
  num_frames: 4
  sampling_rate: 4
  train_jitter_scales: [64, 80]   # one test crop: short side 64 (PySlowFast's 1-crop rule)
  train_crop_size: 64
  test_crop_size: 64
  num_workers: 0
train:
  batch_size: 2
test:
  num_ensemble_views: 2
  num_spatial_crops: 3
  batch_size: 4
  save_logits: true
features:
  stride_seconds: 0.3
  batch_size: 3
device: cpu
{extra}""")
    return path


def make_random_checkpoint(cfg, path: str, seed: int = 0) -> str:
    """A checkpoint of ``build_model(cfg.model)`` whose zero-initialised BN scales are randomised (so
    residual branches, and with them the logits, depend on the input)."""
    from videoattn.config import config_to_dict
    from videoattn.engine.checkpoint import make_checkpoint, save_checkpoint
    from videoattn.models import build_model

    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and float(p.abs().sum()) == 0 and "weight" in name:
                p.normal_(1.0, 0.3)
    save_checkpoint(path, make_checkpoint(model.state_dict(), config_to_dict(cfg), source="test"))
    return path


def run(args, env_extra=None, nproc: int = 0, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python args...`` (or torchrun with ``nproc`` processes) from the repo root."""
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    prefix = [sys.executable] + (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    )
    return subprocess.run(prefix + list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    )
    return proc


def window_views(frames, data, num_crops: int = 1) -> torch.Tensor:
    """``(num_crops, 3, T, S, S)``: the protocol's test crops of decoded frames ``(T, H, W, 3)``,
    built from the protocol's own resize/crop steps (not through the window stream or loaders)."""
    from videoattn.data.protocols import ClipSpec, Protocol
    from videoattn.data.transforms import to_clip, to_tchw

    protocol, spec = Protocol.from_data(data), ClipSpec.from_data(data, 1, num_crops)
    resized = protocol.test_resize(to_tchw(frames), spec)
    return torch.stack([to_clip(protocol.test_crop(resized, c, spec), data) for c in range(num_crops)])


# ----------------------------------------------------- class-balanced metrics, from their definitions
def brute_balanced_accuracy(labels, preds) -> float:
    """Mean over the classes among ``labels`` of the fraction of their samples predicted right
    (sklearn's balanced_accuracy_score), by counting pairs; NaN without labels."""
    classes = sorted(set(labels))
    recalls = [sum(t == p == c for t, p in zip(labels, preds)) / sum(t == c for t in labels) for c in classes]
    return sum(recalls) / len(recalls) if recalls else float("nan")


def brute_macro_f1(labels, preds) -> float:
    """Mean over the classes among the labels or the predictions of 2PR / (P + R), a precision or
    recall with an empty denominator counting 0 (sklearn's f1_score(average="macro"),
    zero_division=0), by counting pairs; NaN without either."""
    scores = []
    for c in sorted(set(labels) | set(preds)):
        tp = sum(t == p == c for t, p in zip(labels, preds))
        predicted, actual = sum(p == c for p in preds), sum(t == c for t in labels)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores) if scores else float("nan")
