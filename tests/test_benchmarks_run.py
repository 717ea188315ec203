"""The benchmark suites still run against the library (tiny sizes; their numbers are not checked:
speed is measured by the benchmarks, never asserted by tests)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "tools/benchmark.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, header",
    [
        (
            ["eval", "--videos-per-class", "1", "--iters", "1", "--setups", "demo (I3D_NL_CBAM_R18, 8x64)"],
            "| setup | views | pipeline views/s",
        ),
        (
            ["features", "--videos-per-class", "1", "--iters", "1", "--setups", "demo (I3D_NL_CBAM_R18, 8x64)"],
            "| setup | windows | pipeline video-s/s",
        ),
        (["train", "--nproc", "1", "--epochs", "1"], "| run | clips/s | data wait"),
    ],
)
def test_suite_runs_and_prints_its_table(args, header, request):
    if args[0] == "train":  # on the suite's shared synthetic set (24 training videos), not 128 generated ones
        args = [*args, "--data", request.getfixturevalue("synthetic_root")]
    proc = _bench(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows and rows[0].startswith(header) and len(rows) >= 2, proc.stdout[-2000:]  # header + a row
    if args[0] == "features":  # the default stride is one window: 8 frames x rate 8 at 30 fps
        assert f"stride {1000 * 8 * 8 / 30:.0f} ms" in rows[1], rows[1]


def test_unknown_suite_is_a_usage_line():
    proc = _bench("nope")
    assert proc.returncode != 0 and "usage:" in proc.stderr


def test_attention_suite_measures_each_kind_and_marks_rows_over_budget():
    """--quick: the block at C=32 on 4x8x8 and 8x8x8, and a width-4 I3D_NL_R50 step per kind. A
    ~107 KB memory budget fits the first map's explicit matrix (64 KiB) but not the second's."""
    proc = _bench("attention", "--quick", "--memory-gib", "0.0001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    first, second = (r for r in rows if r.startswith("| 32 |"))
    assert rows[0].startswith("| C | map TxHxW | batch | N x M | explicit matrix | full SDPA | full explicit |")
    assert first.count(" MiB") == 5 and "failed" not in proc.stdout, proc.stdout[-2000:]  # every kind measured
    assert second.split(" | ")[6] == "over budget: matrix 0.25 MiB", second  # full explicit, 512 x 128 x 4 B
    steps = [r for r in rows if r.startswith("| 4x32x32 |")]
    assert [r.split(" | ")[1] for r in steps] == ["full", "local", "axial", "linear"] and all(
        float(r.split(" | ")[2]) > 0 for r in steps
    )
