"""Pipeline sections of ``tools/benchmarks/gpu.py``: the real tools as subprocesses on a generated
Kinetics-shaped set -- ``train_net`` under torchrun (AMP, SyncBN, ``normalize_on_device``), its
auto-resume, ``test_net`` and ``extract_features``.

Every tool runs with a wall-clock limit in its own process group (killed whole on timeout), so a
hang costs at most its limit. Throughput comes from the tools' own outputs (``metrics.jsonl``
epoch rows, ``test/metrics.json``, ``index.csv``), never from the benchmark's guesses.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Pipeline:
    device: str  # cuda | cpu
    config: str  # YAML recipe
    nproc: int  # torchrun processes for train_net
    workers: int  # DataLoader workers per process
    batch: int  # global train batch
    epochs: int  # first run; the resume run adds one
    views: List[int] = field(default_factory=lambda: [2, 3])  # test: ensemble views x spatial crops
    threads: Optional[int] = None  # OMP_NUM_THREADS for single-process tools
    overrides: List[str] = field(default_factory=list)  # more config overrides for every tool (quick: smaller)


def make_dataset(root: str, train_videos: int, val_videos: int, seconds: float, size_scale: float) -> float:
    """Generate the synthetic Kinetics-shaped set (8 classes) under ``root``; returns seconds taken."""
    from videoattn.datasets.synthetic import make_synthetic_dataset

    t0 = time.perf_counter()
    make_synthetic_dataset(
        root,
        num_classes=8,
        train_per_class=max(1, train_videos // 8),
        val_per_class=max(1, val_videos // 8),
        seed=0,
        min_seconds=seconds * 0.75,
        max_seconds=seconds,
        size_scale=size_scale,
    )
    return time.perf_counter() - t0


def run_tool(cmd: List[str], timeout_s: float, threads: Optional[int] = None) -> dict:
    """Run ``cmd`` from the repository root; ``{"rc", "wall_s", "out"}`` (last 4000 characters)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return {"rc": "timeout", "wall_s": round(time.perf_counter() - t0, 1), "out": out[-4000:]}
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1), "out": out[-4000:]}


def common_overrides(p: Pipeline, root: str, out: str) -> List[str]:
    return [
        f"data.root={root}",
        "data.train_split=train.csv",
        "data.val_split=val.csv",
        "data.test_split=val.csv",
        "data.classes_file=classes.txt",
        f"output_dir={out}",
        "model.num_classes=8",
        f"device={p.device}",
        f"data.num_workers={p.workers}",
        "data.normalize_on_device=true",
        "train.mixed_precision=bf16",
        *p.overrides,
    ]


def train_command(p: Pipeline, root: str, out: str, epochs: int) -> List[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={p.nproc}",
        os.path.join(REPO, "tools", "train_net.py"),
        "--config",
        p.config,
        *common_overrides(p, root, out),
        f"train.batch_size={p.batch}",
        "bn.sync=true",
        f"solver.max_epoch={epochs}",
        "solver.warmup_epochs=0",
        "solver.base_lr=0.01",
        "train.eval_period=0",
        f"train.checkpoint_period={epochs}",
        "train.auto_resume=true",
        "train.log_period=10",
    ]


def epoch_rows(out: str) -> List[dict]:
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [r for r in (json.loads(line) for line in f if line.strip()) if r.get("kind") == "epoch"]


def throughput(rows: List[dict], batch: int) -> dict:
    """Clips/s and data-wait fraction over the epoch rows after the first (worker start-up and
    cudnn autotuning) -- all of them if there is only one."""
    steady = rows[1:] or rows
    clips = sum(r["clips"] for r in steady)
    secs = sum(r["clips"] / max(r["clips_per_s"], 1e-9) for r in steady)
    wait = sum(r["data_wait_frac"] * r["clips"] / max(r["clips_per_s"], 1e-9) for r in steady)
    return {
        "clips_per_s": round(clips / max(secs, 1e-9), 2),
        "data_wait_frac": round(wait / max(secs, 1e-9), 4),
        "epochs_timed": len(steady),
        "iterations_total": sum(r["clips"] for r in rows) // batch,
        "final_loss": rows[-1]["loss"] if rows else None,
    }


def train_and_resume(p: Pipeline, root: str, out: str, timeout_s: float) -> dict:
    """``train_net`` for ``p.epochs`` epochs, then the same command with one more epoch: it must
    resume from the first run's last checkpoint and write the next one."""
    first = run_tool(train_command(p, root, out, p.epochs), timeout_s * 0.7)
    result = {
        "nproc": p.nproc,
        "workers_per_process": p.workers,
        "batch": p.batch,
        "epochs": p.epochs,
        "rc": first["rc"],
        "wall_s": first["wall_s"],
    }
    if first["rc"] != 0:
        return {**result, "error": first["out"][-1500:]}
    result.update(throughput(epoch_rows(out), p.batch))
    ckpt = os.path.join(out, "checkpoints", f"checkpoint_epoch_{p.epochs:05d}.pyth")
    again = run_tool(train_command(p, root, out, p.epochs + 1), timeout_s * 0.3)
    after = os.path.join(out, "checkpoints", f"checkpoint_epoch_{p.epochs + 1:05d}.pyth")
    rows = epoch_rows(out)
    result["resume"] = {
        "rc": again["rc"],
        "wall_s": again["wall_s"],
        "from": os.path.relpath(ckpt, out),
        "resumed": "resumed from" in again["out"] and os.path.basename(ckpt) in again["out"],
        "epochs_run": sum(1 for r in rows if r["epoch"] == p.epochs + 1),
        "wrote_next_checkpoint": os.path.isfile(after),
    }
    if again["rc"] != 0:
        result["resume"]["error"] = again["out"][-1500:]
    result["checkpoint"] = after if os.path.isfile(after) else ckpt
    if os.path.isfile(ckpt):
        result["checkpoint_tensor_devices"] = tensor_devices(ckpt)
    return result


def tensor_devices(path: str) -> dict:
    """``{device: count}`` of the tensors in a checkpoint loaded WITHOUT ``map_location`` (what an
    outside ``torch.load`` sees; CUDA tensors there fail to load on a machine without a GPU)."""
    import torch
    from torch.utils._pytree import tree_leaves

    counts: dict = {}
    for leaf in tree_leaves(torch.load(path, weights_only=True)):
        if isinstance(leaf, torch.Tensor):
            counts[str(leaf.device)] = counts.get(str(leaf.device), 0) + 1
    return counts


def test_and_extract(p: Pipeline, root: str, out: str, checkpoint: str, timeout_s: float) -> dict:
    """``test_net`` (multi-view) and ``extract_features`` on the val videos, one process each."""
    base = ["--config", p.config, "--checkpoint", checkpoint]
    views, crops = p.views
    test = run_tool(
        [
            sys.executable,
            os.path.join(REPO, "tools", "test_net.py"),
            *base,
            *common_overrides(p, root, out),
            f"test.num_ensemble_views={views}",
            f"test.num_spatial_crops={crops}",
            f"test.batch_size={max(1, p.batch)}",
        ],
        timeout_s / 2,
        p.threads,
    )
    result: dict = {"test_net": {"rc": test["rc"], "wall_s": test["wall_s"], "views_per_video": views * crops}}
    metrics_path = os.path.join(out, "test", "metrics.json")
    if test["rc"] == 0 and os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            m = json.load(f)
        result["test_net"].update({k: m.get(k) for k in ("num_videos", "num_clips", "num_unreadable", "video_top1")})
        result["test_net"]["views_per_s_incl_startup"] = round(m.get("num_clips", 0) / max(test["wall_s"], 1e-9), 2)
    else:
        result["test_net"]["error"] = test["out"][-1500:]
    feats = os.path.join(out, "features")
    ext = run_tool(
        [
            sys.executable,
            os.path.join(REPO, "tools", "extract_features.py"),
            *base,
            "--input",
            os.path.join(root, "val.csv"),
            "--output",
            feats,
            *common_overrides(p, root, out),
            "features.stride_seconds=1.0",
            f"features.batch_size={max(1, p.batch)}",
        ],
        timeout_s / 2,
        p.threads,
    )
    result["extract_features"] = {"rc": ext["rc"], "wall_s": ext["wall_s"]}
    index = os.path.join(feats, "index.csv")
    if ext["rc"] == 0 and os.path.isfile(index):
        with open(index, newline="") as f:
            rows = list(csv.DictReader(f))
        result["extract_features"].update(
            num_videos=len(rows),
            windows=sum(int(r["num_windows"]) for r in rows),
            feature_shape=rows[0]["feature_shape"] if rows else None,
        )
    else:
        result["extract_features"]["error"] = ext["out"][-1500:]
    return result
