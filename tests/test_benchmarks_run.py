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
def test_suite_runs_and_prints_its_table(args, header):
    proc = _bench(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows and rows[0].startswith(header) and len(rows) >= 2, proc.stdout[-2000:]  # header + a row
    if args[0] == "features":  # the default stride is one window: 8 frames x rate 8 at 30 fps
        assert f"stride {1000 * 8 * 8 / 30:.0f} ms" in rows[1], rows[1]


def test_unknown_suite_is_a_usage_line():
    proc = _bench("nope")
    assert proc.returncode != 0 and "usage:" in proc.stderr
