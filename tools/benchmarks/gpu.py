#!/usr/bin/env python
"""The GPU benchmark: one run (<= 7 min on one H100) -> one table (printed, ``gpu.md``) + ``gpu.json``.

    python tools/benchmarks/gpu.py [--out DIR]                 # the GPU run (CUDA required)
    python tools/benchmarks/gpu.py --device cpu --quick        # every section, tiny (CI, tests)

Sections, in this order (the cheap, essential ones first; the JSON is rewritten after every row,
so a run cut short keeps what it measured, and progress lines are flushed as it goes):

1. ``nonlocal``   -- the non-local block at 8x28x28 (C = 512, 1024; batch 16), train mode, bf16
   autocast and float32: which SDPA backends accept it (each forced with ``sdpa_kernel``), which
   one runs by default (profiler op names), time and peak memory of the explicit-matrix path vs
   SDPA, forward and forward+backward, with and without the presets' 1x2x2 phi/g subsampling;
   on a GPU host also the CPU path rule on all its cores (batch 1 and 4, forward+backward).
2. ``train_step`` -- forward + backward + SGD step, bf16 autocast, 8x224x224, batch 16, for
   I3D_R50, I3D_NL_R50, I3D_NL_CBAM_R50 and pytorchvideo's ``i3d_r50`` (same settings), each with
   ``channels_last_3d`` off and on: clips/s, peak memory, model-FLOPs utilisation.
3. ``train_net``  -- ``tools/train_net.py`` under torchrun (NCCL, 1 GPU) on a generated
   Kinetics-shaped set (320p, Kinetics recipe), AMP bf16, SyncBN, ``normalize_on_device``,
   workers = cores - 2, ~100 iterations: clips/s and data wait; then auto-resume for one more epoch.
4. ``test_extract`` -- ``tools/test_net.py`` (2x3 views) and ``tools/extract_features.py`` on its
   checkpoint, on the 8 val videos.
5. ``compile``    -- the train step under ``torch.compile`` (default mode), once per model, in the
   memory format that was faster eagerly; each row only if the remaining budget covers it.

``--quick`` shrinks everything (R50 layouts at width 8, 4x32x32, batch 2, 1-2 timed steps, C = 32/64
non-local at 4x8x8, 2 gloo processes on 8 tiny videos with the demo model at width 8 and no precise-BN
pass, one compile with the ``aot_eager`` backend).
CPU rows carry no memory figures and no MFU; nothing here is a GPU number unless meta.device is CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from typing import List, Optional

import torch

try:  # as tools.benchmarks.gpu (tools/benchmark.py dispatch) or as a script
    from . import gpu_model as gm
    from . import gpu_pipeline as gp
except ImportError:
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # this repo
    import gpu_model as gm  # type: ignore[no-redef]
    import gpu_pipeline as gp  # type: ignore[no-redef]

from videoattn.utils.io import atomic_write_text

SECTIONS = ("nonlocal", "train_step", "train_net", "test_extract", "compile")


class Run:
    """The deadline, progress lines, and ``gpu.json`` rewritten (atomically) after every change."""

    def __init__(self, out_dir: str, budget_s: float, meta: dict):
        self.t0, self.budget = time.perf_counter(), budget_s
        self.path = os.path.join(out_dir, "gpu.json")
        self.data: dict = {"meta": meta}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def put(self, section: str, value) -> None:
        self.data[section] = value
        self.data["meta"]["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str) + "\n")


def guarded(run: Run, section: str, fn, *args):
    """``fn(*args)``; an exception becomes the section's recorded error and the run goes on."""
    try:
        return fn(*args)
    except Exception as e:  # a benchmark reports, it does not stop at the first broken part
        run.put(section, {**(run.data.get(section) or {}), "error": f"{type(e).__name__}: {e}"[:500]})
        run.log(f"{section} failed: {type(e).__name__}: {e}")
        return None


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/benchmarks/gpu.py", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--quick", action="store_true", help="tiny sizes for every section (CPU tests)")
    p.add_argument("--out", default="", help="folder for gpu.json and gpu.md (default output/benchmarks/gpu-<time>)")
    p.add_argument("--budget-s", type=float, default=0.0, help="time budget (default 400 s; quick 900 s)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--videos", type=int, default=0, help="generated training videos (default 128; quick 8)")
    return p.parse_args(argv)


def settings(args: argparse.Namespace, device: torch.device) -> dict:
    """Every size of the run; the GPU defaults or the --quick ones."""
    cores = os.cpu_count() or 1
    q = args.quick
    videos = args.videos or (8 if q else 128)
    batch = 4 if q else 16
    return {
        "step": gm.Settings(
            device,
            batch=2 if q else 16,
            frames=4 if q else 8,
            crop=32 if q else 224,
            amp=torch.bfloat16,
            warmup=1 if q else 2,
            iters=2 if q else 6,
            quick=q,
        ),
        "nl": {
            "channels": [32, 64] if q else [512, 1024],
            "shape": [1, 4, 8, 8] if q else [16, 8, 28, 28],
            "warmup": 1 if q else 2,
            "iters": 2 if q else 5,
        },
        "pipeline": gp.Pipeline(
            device=device.type,
            nproc=2 if q else 1,
            batch=batch,
            workers=max(1, (cores - 2) // (2 if q else 1)),
            config=os.path.join(
                gp.REPO, "configs", "synthetic" if q else "kinetics400", "I3D_NL_CBAM_R18.yaml" if q else "I3D_R50.yaml"
            ),
            epochs=max(1, math.ceil((2 if q else 100) / max(1, (videos // 8 * 8) // batch))),
            views=[1, 1] if q else [2, 3],
            threads=1 if q else None,
            # quick: the demo model at width 8 without the precise-BN pass (the tools' paths, less compute)
            overrides=["model.base_channels=8", "bn.use_precise_stats=false"] if q else [],
        ),
        "data": {
            "train_videos": videos,
            "val_videos": 8,
            "seconds": 1.6 if q else 4.0,
            "size_scale": 0.5 if q else 10 / 3,
        },
        "compile": {
            "backend": "aot_eager" if q else "inductor",
            "models": ["I3D_R50"] if q else ["I3D_R50", gm.BASELINE, "I3D_NL_R50", "I3D_NL_CBAM_R50"],
            "estimate_s": 60 if q else 100,
        },
    }


def meta_info(device: torch.device, args: argparse.Namespace, cfg: dict) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = gm.peak_bf16_tflops(name) if device.type == "cuda" else None
    return {
        "device": device.type,
        "device_name": name,
        "quick": args.quick,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cpu_cores": os.cpu_count(),
        "peak_bf16_tflops": peak,
        "flops_convention": gm.FLOPS_CONVENTION,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "cudnn_benchmark": device.type == "cuda",
        "tf32_matmul": device.type == "cuda",
        "settings": {k: (vars(v) if hasattr(v, "__dict__") else v) for k, v in cfg.items()},
    }


def section_nonlocal(run: Run, device: torch.device, nl: dict) -> None:
    out: dict = {"shape_BTHW": nl["shape"], "kernels": [], "rows": []}
    B, T, H, W = nl["shape"]
    for C in nl["channels"]:
        for amp in (torch.bfloat16, None):
            dtype = "bfloat16" if amp else "float32"
            block = gm.NonLocal3d(C, C // 2, "embedded_gaussian", (1, 1, 1)).to(device).train()
            x = torch.randn(B, C, T, H, W, device=device)
            try:
                out["kernels"].append({"C": C, "head_dim": C // 2, "dtype": dtype, **gm.sdpa_kernels(block, x, amp)})
            except Exception as e:  # a report row, never a crash
                out["kernels"].append({"C": C, "dtype": dtype, "error": f"{type(e).__name__}: {e}"[:300]})
            del block, x
            run.log(f"nonlocal kernels C={C} {dtype}: {out['kernels'][-1]}")
            for sub in ((1, 2, 2), (1, 1, 1)):
                try:
                    rows = gm.nonlocal_rows(C, sub, (B, T, H, W), amp, device, nl["warmup"], nl["iters"])
                except Exception as e:
                    rows = [
                        {
                            "C": C,
                            "subsample": "x".join(map(str, sub)),
                            "dtype": dtype,
                            "error": f"{type(e).__name__}: {e}"[:300],
                        }
                    ]
                gm.free_memory(device)
                out["rows"] += rows
                for r in rows:
                    run.log(f"nonlocal {r}")
                run.put("nonlocal", out)
    out["cpu_rows"] = []  # the CPU path rule on this host's cores (a GPU host has many): batch 1 and 4
    for C in nl["channels"]:
        for batch in (1, 4):
            out["cpu_rows"] += gm.nonlocal_rows(
                C, (1, 2, 2), (batch, T, H, W), None, torch.device("cpu"), 1, 2, passes=(True,)
            )
            run.log(f"nonlocal cpu ({torch.get_num_threads()} threads) {out['cpu_rows'][-1]}")
            run.put("nonlocal", out)


def section_train_step(run: Run, s: "gm.Settings", peak: Optional[float]) -> dict:
    facts = {name: gm.model_facts(name, s) for name in gm.OURS + (gm.BASELINE,)}
    out = {"models": facts, "rows": []}
    run.put("train_step", out)
    for name in gm.OURS + (gm.BASELINE,):
        for cl in (False, True):
            try:
                row = gm.step_row(name, s, cl, "", facts[name]["macs_per_clip"], peak)
            except Exception as e:
                row = {"model": name, "channels_last": cl, "compile": False, "error": f"{type(e).__name__}: {e}"[:300]}
                gm.free_memory(s.device)
            out["rows"].append(row)
            run.log(f"train_step {row}")
            run.put("train_step", out)
    return out


def section_pipeline(run: Run, p: "gp.Pipeline", data: dict, work: str, sections: List[str]) -> None:
    root = os.path.join(work, "data")
    gen_s = gp.make_dataset(root, data["train_videos"], data["val_videos"], data["seconds"], data["size_scale"])
    run.log(f"generated {data['train_videos']} + {data['val_videos']} videos in {gen_s:.0f} s")
    out = os.path.join(work, "train")
    res = gp.train_and_resume(p, root, out, timeout_s=min(420.0, max(60.0, run.left() - 60)))
    res["dataset"] = {**data, "generated_in_s": round(gen_s, 1)}
    ckpt = res.pop("checkpoint", None)
    run.put("train_net", res)
    run.log(f"train_net {res}")
    if "test_extract" in sections and ckpt:
        te = gp.test_and_extract(p, root, out, ckpt, timeout_s=min(240.0, max(40.0, run.left() - 10)))
        run.put("test_extract", te)
        run.log(f"test_extract {te}")


def section_compile(run: Run, s: "gm.Settings", comp: dict, steps: dict, peak: Optional[float]) -> None:
    out = {"backend": comp["backend"], "mode": "default", "rows": []}
    estimate = comp["estimate_s"]
    for name in comp["models"]:
        eager = [r for r in steps["rows"] if r["model"] == name and "clips_per_s" in r]
        cl = max(eager, key=lambda r: r["clips_per_s"])["channels_last"] if eager else True
        if run.left() < estimate:
            out["rows"].append(
                {
                    "model": name,
                    "channels_last": cl,
                    "compile": comp["backend"],
                    "skipped": f"time budget ({run.left():.0f} s left, ~{estimate:.0f} s needed)",
                }
            )
        else:
            t0 = time.perf_counter()
            try:
                row = gm.step_row(name, s, cl, comp["backend"], steps["models"][name]["macs_per_clip"], peak)
            except Exception as e:
                row = {
                    "model": name,
                    "channels_last": cl,
                    "compile": comp["backend"],
                    "error": f"{type(e).__name__}: {e}"[:300],
                }
                gm.free_memory(s.device)
            estimate = max(estimate, 1.2 * (time.perf_counter() - t0))
            out["rows"].append(row)
        run.log(f"compile {out['rows'][-1]}")
        run.put("compile", out)


def goals(data: dict) -> dict:
    """The issue's goals, computed from this run's rows (None where a section did not run)."""
    rows = data.get("train_step", {}).get("rows", []) + data.get("compile", {}).get("rows", [])
    ok = {(r["model"], r["channels_last"], r["compile"]): r["clips_per_s"] for r in rows if "clips_per_s" in r}
    ratio = {
        f"channels_last={cl}, compile={c}": round(v / ok[(gm.BASELINE, cl, c)], 3)
        for (m, cl, c), v in ok.items()
        if m == "I3D_R50" and (gm.BASELINE, cl, c) in ok
    }
    nl = [r for r in data.get("nonlocal", {}).get("rows", []) if "auto_vs_explicit" in r]
    mem = [r["memory_ratio"] for r in nl if r["subsample"] == "1x1x1" and r.get("memory_ratio") is not None]
    tn = data.get("train_net", {})
    return {
        "i3d_r50_vs_pytorchvideo (>= 1.2)": ratio,
        "train_net_data_wait (< 0.10)": tn.get("data_wait_frac"),
        "nl_sdpa_memory_below_explicit_no_subsample (>= 10x)": min(mem) if mem else None,
        "nl_auto_vs_explicit_worst (<= 1.0)": max(r["auto_vs_explicit"] for r in nl) if nl else None,
        "nl_auto_vs_explicit_worst_host_cpu (<= 1.0)": max(
            (r["auto_vs_explicit"] for r in data.get("nonlocal", {}).get("cpu_rows", [])), default=None
        ),
    }


def _fmt(v, unit: str = "") -> str:
    return "-" if v is None else (f"{v:.4g}{unit}" if isinstance(v, float) else f"{v}{unit}")


def table(data: dict) -> str:
    """One markdown table: section | case | throughput / time | memory | vs baseline, MFU, notes."""
    lines = ["| section | case | throughput / time | peak memory | notes |", "|---|---|---|---|---|"]
    for sec in ("train_step", "compile"):
        for r in data.get(sec, {}).get("rows", []):
            case = f"{r['model']}, channels_last={r['channels_last']}, compile={r['compile']}"
            if "clips_per_s" not in r:
                lines.append(f"| {sec} | {case} | - | - | {r.get('error') or r.get('skipped')} |")
                continue
            note = f"MFU {_fmt(r['mfu'] and 100 * r['mfu'], '%')}, {r['tflops']} TFLOP/s" + (
                f", compiled in {r['compile_s']} s" if "compile_s" in r else ""
            )
            lines.append(
                f"| {sec} | {case} | {r['clips_per_s']} clips/s ({r['step_ms']} ms/step) "
                f"| {_fmt(r['peak_mem_mib'], ' MiB')} | {note} |"
            )
    nl_rows = data.get("nonlocal", {}).get("rows", []) + data.get("nonlocal", {}).get("cpu_rows", [])
    for r in nl_rows:
        case = f"C={r['C']} sub {r['subsample']} {r['dtype']} {r.get('pass', '')} B={r.get('B')} {r.get('device', '')}"
        if "error" in r:
            lines.append(f"| nonlocal | {case} | - | - | {r['error']} |")
            continue
        lines.append(
            f"| nonlocal | {case} | explicit {r['explicit_ms']} ms, SDPA {r['sdpa_ms']} ms "
            f"| {_fmt(r['explicit_mib'], ' MiB')} vs {_fmt(r['sdpa_mib'], ' MiB')} "
            f"| auto={r['auto_path']} ({r['auto_vs_explicit']}x explicit time); "
            f"SDPA builds NxM: {r.get('sdpa_builds_matrix', '-')} |"
        )
    for k in data.get("nonlocal", {}).get("kernels", []):
        ran = {p: k[p]["default"] for p in ("fwd", "fwd+bwd") if p in k}
        lines.append(
            f"| nonlocal kernels | C={k['C']} head dim {k.get('head_dim')} {k['dtype']} | - | - | "
            f"default: {ran or k.get('error')} |"
        )
    tn = data.get("train_net")
    if tn and "nproc" not in tn:
        lines.append(f"| train_net | - | - | - | {str(tn.get('error', ''))[:200]} |")
    elif tn:
        res = tn.get("resume", {})
        lines.append(
            f"| train_net | torchrun x{tn['nproc']}, {tn['workers_per_process']} workers, batch {tn['batch']}, "
            f"{tn.get('iterations_total', '-')} it | {_fmt(tn.get('clips_per_s'), ' clips/s')} | - | "
            f"data wait {_fmt(tn.get('data_wait_frac') and 100 * tn['data_wait_frac'], '%')}; "
            f"resume: rc {res.get('rc')}, resumed {res.get('resumed')}, next checkpoint "
            f"{res.get('wrote_next_checkpoint')}; checkpoint tensors {tn.get('checkpoint_tensor_devices')} "
            f"{tn.get('error', '')[:80]} |"
        )
    te = data.get("test_extract", {})
    for name, r in te.items():
        if not isinstance(r, dict):  # the section's own error
            lines.append(f"| test_extract | - | - | - | {str(r)[:200]} |")
            continue
        lines.append(
            f"| {name} | {r.get('num_videos', '-')} videos | {r['wall_s']} s incl. start-up | - | "
            f"rc {r['rc']} {r.get('error', '')[-80:]} |".replace("\n", " ")
        )
    for k, v in data.get("goals", {}).items():
        lines.append(f"| goal | {k} | {v} | - | - |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv[1:] if argv[:1] == ["gpu"] else argv)  # tools/benchmark.py passes the suite name
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available (use --device cpu --quick)", file=sys.stderr)
        return 2
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    out_dir = args.out or os.path.join("output", "benchmarks", f"gpu-{time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(os.path.join(out_dir, "gpu.json")):
        print(f"error: {out_dir}/gpu.json exists: another run's result; choose another --out", file=sys.stderr)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    if device.type == "cuda":  # what a tuned GPU training run sets (the engine does not yet: see the report)
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")  # TF32 for float32 matmuls; cuDNN convs use TF32 by default
    cfg = settings(args, device)
    run = Run(out_dir, args.budget_s or (900.0 if args.quick else 400.0), meta_info(device, args, cfg))
    run.log(f"device {run.data['meta']['device_name']}, torch {torch.__version__}; writing {run.path}")
    peak = run.data["meta"]["peak_bf16_tflops"]
    steps: dict = {"rows": [], "models": {}}
    if "nonlocal" in args.sections:
        guarded(run, "nonlocal", section_nonlocal, run, device, cfg["nl"])
    if "train_step" in args.sections or "compile" in args.sections:
        steps = guarded(run, "train_step", section_train_step, run, cfg["step"], peak) or steps
    if "train_net" in args.sections:
        with tempfile.TemporaryDirectory(prefix="videoattn_gpu_bench_") as work:
            guarded(run, "train_net", section_pipeline, run, cfg["pipeline"], cfg["data"], work, args.sections)
    if "compile" in args.sections:
        guarded(run, "compile", section_compile, run, cfg["step"], cfg["compile"], steps, peak)
    run.put("goals", goals(run.data))
    text = table(run.data)
    atomic_write_text(os.path.join(out_dir, "gpu.md"), text + "\n")
    print("\n" + text, flush=True)
    run.log(f"done: {run.path} and gpu.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
