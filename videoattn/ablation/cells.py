"""A cell's folder ``<out>/<variant>/seed<k>/``: what train_net and test_net write there, plus the
runner's own files (claimed with :mod:`videoattn.utils.outputs`, written atomically):

    ablate_cell.json    the cell: variant, seed, base config, overrides, params, GFLOPs (at its first start)
    ablate.log          train_net's and test_net's output, every attempt, appended
    ablate_steps.jsonl  one line per finished step: train / test, exit status, seconds, peak RSS
    ablate_done.json    the marker: written after test_net succeeded and its metrics.json was read back

A cell is finished when its marker exists; a rerun of the grid skips it. Anything else (never
started, killed, failed) is run again in the same folder, where train_net resumes from its last
checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

from videoattn.ablation.cost import ModelCost
from videoattn.ablation.grid import Cell, Grid, GridError
from videoattn.utils.io import atomic_write_json, make_folder
from videoattn.utils.outputs import claim_outputs

TOOL = "ablate"
CELL, LOG, STEPS, DONE = "ablate_cell.json", "ablate.log", "ablate_steps.jsonl", "ablate_done.json"
TEST_METRICS = os.path.join("test", "metrics.json")
ERROR_LINE = re.compile(r"^(config error|error)\b.*: ")  # what the tools print before exiting 1


@dataclass(frozen=True)
class StepRecord:
    """One finished train_net or test_net process of a cell."""

    step: str  # "train" | "test"
    exit: int  # exit status; -N: killed by signal N
    seconds: float  # wall time, start to exit (start-up included)
    cpu_s: float  # user + system CPU seconds of it and its reaped children (wait4's rusage)
    max_rss_kb: int  # wait4's ru_maxrss: the largest single process among it and its reaped children
    time: float  # when it ended (epoch seconds)
    stopped: bool = False  # the runner stopped it (a signal to the runner), so it did not fail


def claim_cell(grid: Grid, cell: Cell, out: str, cost: ModelCost) -> str:
    """Make the cell's folder, claim the runner's files there and record the cell; a folder that
    holds another cell (other overrides or base config) is refused in one line. Returns the folder."""
    folder = cell.folder(out)
    make_folder(folder)
    claim_outputs(folder, TOOL, [CELL, LOG, STEPS, DONE], hint="use another --output")  # refuse early
    record = {
        "variant": cell.variant,
        "seed": cell.seed,
        "base_config": grid.base_config,
        "overrides": list(cell.overrides),
        "nproc": grid.nproc,
        "params": cost.params,
        "gflops": cost.gflops,
    }
    old = read_json(os.path.join(folder, CELL))
    same = ("base_config", "overrides", "nproc")
    if old is not None and any(old.get(k) != record[k] for k in same):
        raise GridError(
            f"{folder} holds a cell run with other settings ({old.get('overrides')}); "
            "use another --output to run the changed grid"
        )
    atomic_write_json(os.path.join(folder, CELL), record)
    with open(os.path.join(folder, LOG), "ab"):
        pass  # exists from now on, so that train_net's claims keep it listed
    return folder


def _claim(folder: str, name: str) -> None:
    """Claim ``name`` again right before writing it: train_net's claims in the folder drop the
    listed names whose files do not exist yet. Only between the cell's steps: no claim runs at once."""
    claim_outputs(folder, TOOL, [name], hint="use another --output")


def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``, or None if it is missing or not a complete JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_done(folder: str) -> bool:
    return read_json(os.path.join(folder, DONE)) is not None


def mark_done(folder: str) -> dict:
    """Read test_net's metrics back and write the marker; returns the metrics. ValueError if the
    metrics file is missing or unreadable (the cell is then not finished)."""
    metrics = read_json(os.path.join(folder, TEST_METRICS))
    if metrics is None or "video_top1" not in metrics:
        raise ValueError(f"test_net exited 0 but {os.path.join(folder, TEST_METRICS)} is missing or incomplete")
    _claim(folder, DONE)
    atomic_write_json(os.path.join(folder, DONE), {"finished": time.time(), "test": metrics})
    return metrics


def append_step(folder: str, record: StepRecord) -> None:
    _claim(folder, STEPS)
    with open(os.path.join(folder, STEPS), "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(record)) + "\n")


def read_steps(folder: str) -> List[StepRecord]:
    """The cell's finished steps (a torn last line, from a kill while appending, is skipped)."""
    steps = []
    try:
        with open(os.path.join(folder, STEPS), encoding="utf-8") as f:
            for line in f:
                try:
                    steps.append(StepRecord(**json.loads(line)))
                except (ValueError, TypeError):
                    continue
    except OSError:
        pass
    return steps


def error_line(folder: str) -> str:
    """The last attempt's error line from the cell's log (``error: ...`` / ``config error: ...``),
    else its last non-empty line."""
    try:
        with open(os.path.join(folder, LOG), encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        return ""
    starts = [i for i, line in enumerate(lines) if line.startswith("== ")]
    last = lines[starts[-1] + 1 :] if starts else lines
    errors = [line for line in last if ERROR_LINE.match(line)]
    return (errors or last or [""])[-1][:500]


def log_tail(folder: str, count: int = 5) -> List[str]:
    """The last ``count`` non-empty lines of the cell's log."""
    try:
        with open(os.path.join(folder, LOG), encoding="utf-8", errors="replace") as f:
            return [line.rstrip() for line in f if line.strip()][-count:]
    except OSError:
        return []
