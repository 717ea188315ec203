"""results.csv, summary.md and summary.png, rebuilt from the cells' own files every time (a rerun or a
partial grid gives a consistent table), each written atomically.

results.csv: one row per cell of the grid, accuracies as fractions (as test_net's metrics.json):
``best_val_top1`` (the best validation top-1 in the training's metrics.jsonl), ``test_clip_top1``,
``test_video_top1``, ``test_mean_class_acc`` (test/metrics.json; only for finished cells),
``params``, ``gflops``, ``train_s`` (wall seconds of every train_net attempt, start-up included),
``train_cpu_s`` (their user + system CPU seconds, all processes),
``clips_per_s`` (training throughput, the mean of the epochs' ``clips_per_s``), ``peak_rss_mib``
(the largest single process of any step, see videoattn/ablation/run.py) and ``error`` (a failed
cell's error line). summary.md: per variant and metric, over the finished cells only, n, mean ± std,
the 95% t-interval, and the paired difference from the baseline (see videoattn/ablation/stats.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import astuple, dataclass, fields
from typing import Dict, List, Optional

from videoattn.ablation.cells import CELL, DONE, error_line, read_json, read_steps
from videoattn.ablation.grid import Grid
from videoattn.utils.io import atomic_write_csv

RESULTS = "results.csv"
DONE_STATUS = "done"


@dataclass
class CellResult:
    variant: str
    seed: int
    status: str  # done | failed | stopped | incomplete | not run
    best_val_top1: Optional[float] = None
    test_clip_top1: Optional[float] = None
    test_video_top1: Optional[float] = None
    test_mean_class_acc: Optional[float] = None
    params: Optional[int] = None
    gflops: Optional[float] = None
    train_s: Optional[float] = None
    train_cpu_s: Optional[float] = None
    clips_per_s: Optional[float] = None
    peak_rss_mib: Optional[float] = None
    error: str = ""


def _training_metrics(folder: str) -> Dict[str, Optional[float]]:
    """Best val top-1 and the mean training clips/s from train_net's metrics.jsonl (a resumed run
    appends: the last record of each epoch counts)."""
    val, speed = [], {}
    try:
        with open(os.path.join(folder, "metrics.jsonl"), encoding="utf-8") as f:
            for line in f:
                rec = _json_line(line)
                if rec.get("kind") == "val" and isinstance(rec.get("top1"), (int, float)):
                    val.append(rec["top1"])
                elif rec.get("kind") == "epoch" and isinstance(rec.get("clips_per_s"), (int, float)):
                    speed[rec.get("epoch")] = rec["clips_per_s"]
    except OSError:
        pass
    return {
        "best_val_top1": max(val) if val else None,
        "clips_per_s": sum(speed.values()) / len(speed) if speed else None,
    }


def _json_line(line: str) -> dict:
    try:
        data = json.loads(line)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _status(folder: str, steps) -> str:
    if read_json(os.path.join(folder, DONE)) is not None:
        return DONE_STATUS
    if not steps:
        return "not run"
    if steps[-1].stopped:
        return "stopped"
    return "failed" if steps[-1].exit != 0 else "incomplete"


def cell_result(variant: str, seed: int, folder: str) -> CellResult:
    steps = read_steps(folder)
    row = CellResult(variant, seed, _status(folder, steps))
    cell = read_json(os.path.join(folder, CELL)) or {}
    row.params, row.gflops = cell.get("params"), cell.get("gflops")
    train = [s for s in steps if s.step == "train"]
    row.train_s = sum(s.seconds for s in train) if train else None
    row.train_cpu_s = sum(s.cpu_s for s in train) if train else None
    row.peak_rss_mib = max(s.max_rss_kb for s in steps) / 1024 if steps else None
    for key, value in _training_metrics(folder).items():
        setattr(row, key, value)
    if row.status == DONE_STATUS:
        test = (read_json(os.path.join(folder, DONE)) or {}).get("test", {})
        row.test_clip_top1, row.test_video_top1 = test.get("clip_top1"), test.get("video_top1")
        row.test_mean_class_acc = test.get("mean_class_accuracy")
    elif row.status == "failed":
        row.error = error_line(folder)
    return row


def collect(grid: Grid, out: str) -> List[CellResult]:
    return [cell_result(c.variant, c.seed, c.folder(out)) for c in grid.cells()]


def _csv_value(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_results(rows: List[CellResult], out: str) -> None:
    header = [f.name for f in fields(CellResult)]
    atomic_write_csv(os.path.join(out, RESULTS), header, [[_csv_value(v) for v in astuple(r)] for r in rows])
