"""tools/benchmark.py data --quick: every code path of the data suite (raw set, prepare, our loader,
every decoder's decode-only bound, decord2 in its child process, the peers' loaders on raw and
prepared files, the GOP sweep, the loader's and the decoders' memory) on a tiny set. The decoders'
exactness table has its own test (tests/data/test_decoder_exactness.py)."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
from benchmarks.decoders import MODES, decord2_missing  # noqa: E402

ROWS = [
    "ours, raw",
    "ours, raw, decoding_backend=decord",
    "ours, raw, normalize_on_device",
    "ours, raw, clips_per_video=2",
    "ours, prepared",
    "ours, prepared, decoding_backend=decord",
    "ours, prepared, normalize_on_device",
    "ours, prepared, referenced B-frames",
    "PySlowFast PyAV decoder (decode only), raw",
    "PySlowFast PyAV decoder (decode only), prepared",
]
# every decoder's bound on the raw and the prepared files; the old prepared format: decord and PyAV
BOUNDS = [f"decode-only bound: {m}, {where}" for where in ("raw", "prepared") for m in MODES] + [
    f"decode-only bound: {m}, prepared, referenced B-frames" for m in ("decord", "pyav", "pyav, no skip")
]
PEER_ROWS = {
    "pytorchvideo": [
        "pytorchvideo Kinetics (decord), raw",
        "pytorchvideo Kinetics (decord, threads=1), raw",
        "pytorchvideo Kinetics (decord), prepared",
    ],
    "mmaction2": ["mmaction2 VideoDataset (decord), raw", "mmaction2 VideoDataset (decord), prepared"],
}


@pytest.mark.slow
def test_data_benchmark_quick_runs_every_row(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "benchmark.py"),
        "data",
        "--quick",
        "--gops",
        "16",
        "--rss",
        "4",
        "8",
        "--decoder-rss",
        "4",
        "8",
        "--data-dir",
        str(tmp_path / "raw"),
    ]
    r = subprocess.run(
        cmd,
        env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    main_table = out.split("| pipeline ", 1)[1].split("\n\n", 1)[0]
    table = {
        m[1].strip(): (float(m[2]), float(m[3]))
        for m in re.finditer(r"^\| ([^|]+?) +\| +([\d.]+) \| +([\d.]+) \|", main_table, re.M)
    }
    expected = ROWS + [r for r in BOUNDS if "decord2" not in r or not decord2_missing()]
    for peer, rows in PEER_ROWS.items():
        if f"peer not measured: {peer}" not in out:
            expected += rows
    assert sorted(table) == sorted(expected), out
    assert all(per_core > 0 and wall > 0 for per_core, wall in table.values())
    assert re.search(
        r"^clips_per_video=2 vs 1 \(ours, raw, per core\): [\d.]+x \([\d.]+ vs [\d.]+ clips/CPU-s\)$", out, re.M
    )
    assert "ours drew the same clips on raw and prepared files: True" in out
    assert re.search(r"preparation .*: 4 videos in [\d.]+ s wall, [\d.]+ CPU s: [\d.]+ videos/s per core", out)
    assert re.search(r"prepared vs raw \(ours, per core\): [\d.]+x", out)
    assert re.search(r"loader / its decoder's decode-only bound .*: ours, raw [\d.]+x, .*ours, prepared [\d.]+x", out)
    for where in ("raw", "prepared"):
        assert re.search(rf"ours vs the best peer loader on the same {where} files \(per core\): [\d.]+x", out) or (
            "peer not measured" in out
        )
        best = re.search(rf"the same {where} files \(per core\): [\d.]+x vs (.+?) \(goal", out)
        if best and "mmaction2" in best.group(1):  # its uint8 output against ours with the same output
            assert re.search(rf"the same output as {re.escape(best.group(1))} \(uint8 clips, .*\): [\d.]+x", out)
    assert re.search(r"unreferenced vs referenced B-frames in prepared files \(ours, per core\): [\d.]+x", out)
    for name in ("decord", "pyav") + (() if decord2_missing() else ("decord2",)):
        assert re.search(rf"resident memory, {name} \(decode only, one fresh process\): [\d]+ MiB after 4 clips", out)
    assert re.search(r"^\| 16 \| [\d.]+ \| [\d.]+ \| [\d.]+x \| [\d.]+ \|$", out, re.M)
    assert re.search(r"^\| 32, CABAC \| [\d.]+ \| [\d.]+ \| [\d.]+x \| [\d.]+ \|$", out, re.M)
    assert "resident memory, 2 workers + main (3 processes)" in out
    assert len([n for n in os.listdir(tmp_path / "raw" / "train") if n.endswith(".mp4")]) == 4
