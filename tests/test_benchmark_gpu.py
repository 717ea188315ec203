"""tools/benchmarks/gpu.py: the whole script, run for real on CPU with ``--quick`` (tiny sizes, 2 gloo
processes, real tools on real videos); the JSON must hold every section with consistent numbers."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # runs the whole GPU benchmark script on the CPU

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "benchmarks", "gpu.py")


def _run(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench") / "out"
    proc = _run("--device", "cpu", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "gpu.json") as f:
        return json.load(f), (out / "gpu.md").read_text(), proc.stdout


def _gm():
    spec = importlib.util.spec_from_file_location(
        "gpu_model", os.path.join(REPO, "tools", "benchmarks", "gpu_model.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_model", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_section_is_there(quick):
    data, table, stdout = quick
    assert {"meta", "nonlocal", "train_step", "train_net", "test_extract", "compile", "goals"} <= set(data)
    meta = data["meta"]
    assert meta["device"] == "cpu" and meta["quick"] is True and meta["peak_bf16_tflops"] is None
    assert "6 x MACs" in meta["flops_convention"]
    assert table.count("\n| train_step |") == 8 and "| train_net |" in table and "| goal |" in table
    assert "[" in stdout.splitlines()[0]  # progress lines come first, the table last
    assert stdout.rstrip().splitlines()[-1].endswith("gpu.md")


def test_train_step_rows_are_consistent(quick):
    data, _, _ = quick
    steps = data["train_step"]
    s = data["meta"]["settings"]["step"]
    assert len(steps["rows"]) == 8
    assert {(r["model"], r["channels_last"]) for r in steps["rows"]} == {
        (m, cl) for m in ("I3D_R50", "I3D_NL_R50", "I3D_NL_CBAM_R50", "pytorchvideo i3d_r50") for cl in (False, True)
    }
    # same layout at the same width: the baseline really is the twin of I3D_R50
    assert steps["models"]["I3D_R50"]["params"] == steps["models"]["pytorchvideo i3d_r50"]["params"]
    assert steps["models"]["I3D_R50"]["macs_per_clip"] == steps["models"]["pytorchvideo i3d_r50"]["macs_per_clip"]
    assert steps["models"]["I3D_NL_R50"]["macs_per_clip"] > steps["models"]["I3D_R50"]["macs_per_clip"]
    for r in steps["rows"]:
        assert "error" not in r, r
        assert r["clips_per_s"] > 0 and r["step_ms"] > 0
        assert r["clips_per_s"] * r["step_ms"] / 1000 == pytest.approx(s["batch"], rel=0.02)
        macs = steps["models"][r["model"]]["macs_per_clip"]
        assert r["tflops"] == pytest.approx(r["clips_per_s"] * 6 * macs / 1e12, abs=1e-3)
        assert r["mfu"] is None and r["peak_mem_mib"] is None  # no CPU peak, no CPU memory figure


def test_nonlocal_section(quick):
    data, _, _ = quick
    nl = data["nonlocal"]
    assert {(k["C"], k["dtype"]) for k in nl["kernels"]} == {(c, d) for c in (32, 64) for d in ("bfloat16", "float32")}
    for k in nl["kernels"]:
        for p in ("fwd", "fwd+bwd"):
            assert k[p]["backends"]["math"] == "ok"  # the reference kernel always runs
            assert k[p]["default"], k  # the profiler saw which kernel ran
    rows = nl["rows"]
    assert len(rows) == 2 * 2 * 2 * 2  # C x subsample x dtype x pass
    B, T, H, W = nl["shape_BTHW"]
    for r in rows:
        assert "error" not in r, r
        assert r["explicit_ms"] > 0 and r["sdpa_ms"] > 0
        assert r["N"] == T * H * W and r["M"] == (T * H * W if r["subsample"] == "1x1x1" else T * H * W // 4)
        assert r["auto_path"] == ("sdpa" if r["pass"] == "fwd" else r["auto_path"])  # inference: always SDPA
        # the ratio is rounded to 3 decimals (half a unit: 5e-4), the times too (the 1%)
        assert r["auto_vs_explicit"] == pytest.approx(r[f"{r['auto_path']}_ms"] / r["explicit_ms"], rel=0.01, abs=5e-4)
    cpu = nl["cpu_rows"]  # the host-CPU rule check: batch 1 and 4, forward+backward
    assert [(r["C"], r["B"], r["pass"], r["device"]) for r in cpu] == [
        (c, b, "fwd+bwd", "cpu") for c in (32, 64) for b in (1, 4)
    ]
    assert all(r["explicit_ms"] > 0 and r["sdpa_ms"] > 0 for r in cpu)


def test_pipeline_sections(quick):
    data, _, _ = quick
    tn = data["train_net"]
    assert tn["rc"] == 0 and tn["nproc"] == 2 and tn["iterations_total"] == 2
    assert tn["clips_per_s"] > 0 and 0 <= tn["data_wait_frac"] <= 1
    res = tn["resume"]
    assert res["rc"] == 0 and res["resumed"] and res["wrote_next_checkpoint"] and res["epochs_run"] == 1
    assert tn["checkpoint_tensor_devices"]["cpu"] > 100 and set(tn["checkpoint_tensor_devices"]) == {"cpu"}
    te = data["test_extract"]
    assert te["test_net"]["rc"] == 0 and te["test_net"]["num_videos"] == 8 and te["test_net"]["num_clips"] == 8
    assert te["extract_features"]["rc"] == 0 and te["extract_features"]["num_videos"] == 8
    assert te["extract_features"]["windows"] >= 8


def test_compile_and_goals(quick):
    data, _, _ = quick
    (row,) = data["compile"]["rows"]
    assert row["model"] == "I3D_R50" and row["compile"] == "aot_eager" and row["compile_s"] > 0
    assert row["clips_per_s"] > 0
    goals = data["goals"]
    ratios = goals["i3d_r50_vs_pytorchvideo (>= 1.2)"]
    assert set(ratios) == {"channels_last=False, compile=False", "channels_last=True, compile=False"}
    assert all(v > 0 for v in ratios.values())
    assert goals["train_net_data_wait (< 0.10)"] == data["train_net"]["data_wait_frac"]
    assert goals["nl_sdpa_memory_below_explicit_no_subsample (>= 10x)"] is None  # CPU: no memory figures


def test_refuses_missing_cuda_and_another_runs_output(tmp_path):
    proc = _run("--device", "cuda", "--out", str(tmp_path / "a"), timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "CUDA" in proc.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "gpu.json").write_text("{}")
    proc = _run("--device", "cpu", "--quick", "--out", str(tmp_path / "b"), timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "another run" in proc.stderr
    assert (tmp_path / "b" / "gpu.json").read_text() == "{}"


def test_peak_table():
    gm = _gm()
    assert gm.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gm.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gm.peak_bf16_tflops("NVIDIA H200") == 989.4
    assert gm.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gm.peak_bf16_tflops("Tesla V100-SXM2-16GB") is None
