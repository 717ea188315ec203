"""tools/ablate.py: a tiny grid end to end through the real tools (torchrun train_net + test_net per
cell), stopped by a real SIGTERM mid-cell and rerun; the statistics against hand computations; one
line for a bad grid file, before anything runs; the same cells through submitit's local executor."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from ddp_worker import small_overrides

from videoattn.ablation.main import main
from videoattn.ablation.stats import T975, paired_difference, summarize, t975

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOOL = os.path.join(REPO, "tools", "ablate.py")
BASE = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
ENV = {**os.environ, "PYTHONPATH": REPO}


def write_grid(path, root, variants, **extra) -> str:
    """A grid over the ``synthetic_root`` fixture: the small recipe of the training tests, 2 epochs
    (a checkpoint after each), 1 test view."""
    common = [o for o in small_overrides(root, "unused") if not o.startswith(("output_dir=", "solver.max_epoch="))]
    common += ["solver.max_epoch=2", "train.checkpoint_period=1", "train.eval_period=1", "test.num_ensemble_views=1"]
    grid = {"base_config": BASE, "overrides": common, "seeds": [0], "baseline": next(iter(variants))}
    grid.update(variants=variants, **extra)
    with open(path, "w") as f:
        yaml.safe_dump(grid, f, sort_keys=False)
    return str(path)


def results(out):
    with open(os.path.join(out, "results.csv")) as f:
        return {(r["variant"], int(r["seed"])): r for r in csv.DictReader(f)}


def read(path):
    with open(path) as f:
        return f.read()


# ----------------------------------------------------------------------------------- statistics
def test_statistics_against_a_hand_computation():
    # mean 0.8, deviations -0.02, +0.04, -0.02: std = sqrt(0.0024 / 2) = 0.034641; t(0.975, 2) = 4.3027
    s = summarize([0.78, 0.84, 0.78])
    half = 4.3027 * math.sqrt(0.0012) / math.sqrt(3)  # = 0.086054
    assert s.n == 3 and s.mean == pytest.approx(0.8) and s.std == pytest.approx(0.0346410, abs=1e-6)
    assert (s.low, s.high) == (pytest.approx(0.8 - half), pytest.approx(0.8 + half))
    assert s.low == pytest.approx(0.713946, abs=1e-6)
    # Paired: seed 3 only in the variant, seed 4 NaN in the baseline; shared seeds 0, 1, 2:
    # differences +0.10, +0.06, +0.08 -> mean 0.08, std 0.02, half = 4.3027 * 0.02 / sqrt(3) = 0.049683
    p = paired_difference({0: 0.9, 1: 0.8, 2: 0.7, 3: 0.1, 4: 0.5}, {0: 0.8, 1: 0.74, 2: 0.62, 4: float("nan")})
    assert p.seeds == (0, 1, 2) and p.diff.mean == pytest.approx(0.08) and p.diff.std == pytest.approx(0.02)
    assert p.diff.low == pytest.approx(0.030317, abs=1e-6) and p.verdict == "above 0"
    # -0.10, -0.12, -0.11: mean -0.11, std 0.01, half 0.0248 -> below 0; with two seeds (-0.10, -0.12)
    # the half width is 12.7062 * 0.01414 / sqrt(2) = 0.127: contains 0
    assert paired_difference({0: 0.5, 1: 0.4, 2: 0.3}, {0: 0.6, 1: 0.52, 2: 0.41}).verdict == "below 0"
    assert paired_difference({0: 0.5, 1: 0.4}, {0: 0.6, 1: 0.52}).verdict == "contains 0"
    assert paired_difference({0: 0.5, 1: 0.7}, {0: 0.6, 1: 0.6}).verdict == "contains 0"  # -0.1, +0.1
    # n < 2 or NaN: no std, no interval, and a verdict that says why
    one = paired_difference({0: 0.9, 1: float("nan")}, {0: 0.8, 1: 0.7})
    assert one.diff.n == 1 and one.diff.std is None and one.diff.low is None and one.verdict == "n=1, no interval"
    assert summarize([float("nan"), None]) == summarize([])
    assert summarize([]).mean is None and summarize([0.5]).std is None


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 200):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=5e-5 if df <= len(T975) else 1e-7), df


# ----------------------------------------------------------------------------------- bad grids
@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"epochs": 3},
            "unknown key 'epochs' (valid keys: base_config, overrides, seeds, nproc, baseline, variants, comparisons)",
        ),
        ({"base_config": "nowhere.yaml"}, "base_config nowhere.yaml not found"),
        ({"variants": {"a": {}, "b": {"overrides": ["solver.base_lr=-1"]}}}, "variant 'b' (seed 0): "),
        ({"variants": {"a": {}, "b": {"overrides": ["model.cbam.stagez=[2]"]}}}, "did you mean 'model.cbam.stages'"),
        ({"variants": {"a": {}, "b": {"overrides": ["model.preset=I3D_NL_CBAM_R81"]}}}, "variant 'b': unknown model"),
        ({"variants": {"a": {"seed": [1]}}}, "variant 'a': unknown key 'seed'"),
        ({"variants": {"a": {"overrides": ["seed=3"]}}}, "the runner sets seed and output_dir per cell"),
        ({"baseline": "c"}, "baseline 'c' is not a variant (a, b)"),
        ({"nproc": 3}, "variant 'a': train.batch_size=8 is the global batch"),
    ],
)
def test_a_bad_grid_is_one_line_before_anything_runs(tmp_path, capsys, change, expected):
    grid = write_grid(tmp_path / "grid.yaml", str(tmp_path), {"a": {}, "b": {}})
    data = yaml.safe_load(read(grid))
    data.update(change)
    with open(grid, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    assert main([grid, "--output", str(tmp_path / "out")], tools_dir="unused") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"grid error: {grid}") and expected in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "out" / "a")  # no cell was started or claimed


def test_a_users_file_in_the_output_is_not_replaced(tmp_path, capsys):
    grid = write_grid(tmp_path / "grid.yaml", str(tmp_path), {"a": {}})
    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / "summary.md").write_text("mine")
    assert main([grid, "--output", str(tmp_path / "out")], tools_dir="unused") == 1
    assert "summary.md exists and was not written by ablate; not replaced" in capsys.readouterr().err
    assert read(tmp_path / "out" / "summary.md") == "mine"


# ----------------------------------------------------------------------------------- end to end
def _ablate(grid, out, *args):
    return subprocess.Popen(
        [sys.executable, TOOL, grid, "--output", out, "--threads", "1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        cwd=REPO,
    )


def _wait_for(path, proc, timeout=300):
    deadline = time.time() + timeout
    while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(path), f"{path} never appeared"


@pytest.mark.slow
def test_grid_end_to_end_stopped_mid_cell_and_rerun(synthetic_root, tmp_path):
    # 3 cells (each ~6 s CPU of training + ~4.5 s of testing, mostly start-up): the CPU budget of the suite
    variants = {
        "full": {"seeds": [0, 1]},
        "broken": {"overrides": ["data.train_split=missing.csv", "model.cbam.stages=[]"]},  # fails in train_net
    }
    grid, out = write_grid(tmp_path / "grid.yaml", synthetic_root, variants), str(tmp_path / "out")
    first = _ablate(grid, out)  # --jobs 1, in rounds of seeds: full/seed0, broken/seed0, then full/seed1
    _wait_for(os.path.join(out, "full", "seed1", "checkpoints", "checkpoint_epoch_00001.pyth"), first)
    first.send_signal(signal.SIGTERM)  # a real signal to the runner, mid-cell
    log, _ = first.communicate(timeout=300)
    assert first.returncode == 143, log
    assert "full/seed0: done" in log and "full/seed1: stopped" in log and "broken/seed0: FAILED" in log
    assert log.index("broken/seed0: training") < log.index("full/seed1: training"), log  # every first seed first
    rows = results(out)
    assert [rows[k]["status"] for k in rows] == ["done", "stopped", "failed"]  # the tables keep file order
    done0 = os.path.join(out, "full", "seed0")
    before = {n: os.stat(os.path.join(done0, n)).st_mtime_ns for n in ("ablate_done.json", "ablate.log", "train.log")}

    second = _ablate(grid, out, "--jobs", "2")
    log, _ = second.communicate(timeout=600)
    assert second.returncode == 1, log  # one cell failed; the others ran
    assert "3 cells, 1 finished already, 2 to run" in log and "full/seed0" not in log.split("to run")[1]
    assert "error: 1 of 2 cell(s) failed: broken/seed0; see results.csv" in log
    assert {n: os.stat(os.path.join(done0, n)).st_mtime_ns for n in before} == before  # not rerun
    resumed = read(os.path.join(out, "full", "seed1", "train.log"))
    assert "resumed from" in resumed, resumed[-3000:]

    rows = results(out)
    assert [(k, rows[k]["status"]) for k in rows] == [
        (("full", 0), "done"),
        (("full", 1), "done"),
        (("broken", 0), "failed"),
    ]
    assert rows["broken", 0]["error"].startswith("error: annotation file or folder not found")
    assert int(rows["broken", 0]["params"]) < int(rows["full", 0]["params"])  # without CBAM's parameters
    for (variant, seed), row in list(rows.items())[:2]:
        folder = os.path.join(out, variant, f"seed{seed}")
        test = json.load(open(os.path.join(folder, "test", "metrics.json")))
        val = [json.loads(x)["top1"] for x in open(os.path.join(folder, "metrics.jsonl")) if '"kind": "val"' in x]
        assert float(row["test_video_top1"]) == pytest.approx(test["video_top1"])
        assert float(row["test_mean_class_acc"]) == pytest.approx(test["mean_class_accuracy"])
        assert float(row["best_val_top1"]) == pytest.approx(max(val))
        assert float(row["train_s"]) > 0 and float(row["peak_rss_mib"]) > 100

    summary = read(os.path.join(out, "summary.md"))
    full = [float(rows["full", s]["test_video_top1"]) for s in (0, 1)]
    s = summarize(full)
    line = f"| full | 2 | {100 * s.mean:.2f} | {100 * s.std:.2f} | [{100 * s.low:.2f}, {100 * s.high:.2f}] | baseline |"
    assert line in summary, summary
    assert "| broken | 0 | – | – | no finished cell |" in summary and "nan" not in summary.lower()
    assert "- `broken/seed0`: failed: error: annotation file or folder not found" in summary
    with open(os.path.join(out, "summary.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"


@pytest.mark.slow
def test_submitit_local_executor_runs_a_cell(synthetic_root, tmp_path):
    """The --executor slurm path (a submitit array of CellTask) through submitit's local executor."""
    variants = {"one_epoch": {"overrides": ["solver.max_epoch=1"]}}
    grid, out = write_grid(tmp_path / "grid.yaml", synthetic_root, variants), str(tmp_path / "out")
    proc = _ablate(grid, out, "--executor", "submitit-local", "--time", "10", "--gpus-per-cell", "0")
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert "submitted 1 cell(s) (submitit-local, 0 GPU(s) each)" in log
    row = results(out)["one_epoch", 0]
    assert row["status"] == "done" and float(row["test_video_top1"]) >= 0
    job_logs = os.listdir(os.path.join(out, "slurm"))
    assert job_logs and "one_epoch/seed0: done" in "".join(
        read(os.path.join(out, "slurm", j, n))
        for j in job_logs
        for n in os.listdir(os.path.join(out, "slurm", j))
        if n.endswith(".out")
    )


def test_cells_run_in_rounds_of_seeds_and_the_tables_stay_in_file_order(tmp_path):
    """A grid stopped part-way leaves every variant with the same number of seeds done: the runner
    starts every variant's first seed before any second one; results.csv keeps the file's order."""
    from videoattn.ablation.grid import load_grid

    grid = load_grid(write_grid(tmp_path / "g.yaml", str(tmp_path), {"a": {"seeds": [0, 1, 2]}, "b": {}, "c": {}}))
    assert [c.name for c in grid.run_order()] == ["a/seed0", "b/seed0", "c/seed0", "a/seed1", "a/seed2"]
    assert [c.name for c in grid.cells()] == ["a/seed0", "a/seed1", "a/seed2", "b/seed0", "c/seed0"]


def test_comparisons_are_paired_over_the_seeds_both_finished(tmp_path):
    """A grid's ``comparisons`` ("a - b") in summary.md: the paired difference by hand, over shared seeds."""
    from videoattn.ablation.grid import load_grid
    from videoattn.ablation.report import DONE_STATUS, CellResult
    from videoattn.ablation.summary import comparison_table

    path = write_grid(tmp_path / "g.yaml", str(tmp_path), {"a": {"seeds": [0, 1, 2]}, "b": {}, "c": {"seeds": [0, 1]}})
    data = yaml.safe_load(read(path))
    data["comparisons"] = ["c - b"]
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    grid = load_grid(path)
    cells = [("b", 0, 0.5), ("b", 1, 0.6), ("c", 0, 0.7), ("c", 1, 0.7)]
    rows = [CellResult(v, s, DONE_STATUS, test_clip_top1=x, test_video_top1=x) for v, s, x in cells]
    line = next(t for t in comparison_table(grid, rows) if t.startswith("| c - b | Test video"))
    # differences 0.2 and 0.1: mean 15 points, std 0.0707, half-width 12.7062 * 0.0707 / sqrt(2) = 63.53 points
    assert line == "| c - b | Test video top-1 | 2 | +15.00 | [-48.53, +78.53] | contains 0 |", line
    data["comparisons"] = ["c - d"]
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    with pytest.raises(Exception, match="comparison 'c - d' is not 'variant - variant'"):
        load_grid(path)
