"""``tools/benchmark.py train``: training throughput of the demo recipe, 1 vs N processes.

Each row is a real short run of ``tools/train_net.py`` (``torchrun`` for N > 1) on the synthetic
set; clips/s and the data-wait fraction come from the last epoch's row of its metrics.jsonl
(the first epoch pays for worker start-up). The named baselines, measured in the same run:

* ``1 process``: ratios of the other rows are against it;
* ``model only``: forward+backward+SGD step of the same model on random tensors in one
  process with the same thread count -- the bound on what the data pipeline lets through.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

import torch

from videoattn.config import load_config
from videoattn.datasets.synthetic import make_synthetic_dataset
from videoattn.engine.device import for_device
from videoattn.models import build_model
from videoattn.train.solver import build_optimizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")


def _train_run(
    nproc: int, cfg_path: str, data_root: str, out: str, epochs: int, extra: List[str], threads: Optional[int] = None
) -> dict:
    overrides = [
        f"data.root={data_root}",
        f"output_dir={out}",
        f"solver.max_epoch={epochs}",
        "train.eval_period=0",
        "train.checkpoint_period=1000",
        "train.auto_resume=false",
        "device=cpu",
        *extra,
    ]
    script = os.path.join(REPO, "tools", "train_net.py")
    if nproc == 1:
        cmd = [sys.executable, script, "--config", cfg_path, *overrides]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            script,
            "--config",
            cfg_path,
            *overrides,
        ]
    t0 = time.perf_counter()
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    last = [r for r in rows if r["kind"] == "epoch"][-1]
    return {"clips_per_s": last["clips_per_s"], "data_wait": last["data_wait_frac"], "wall_s": wall}


def _model_only(cfg_path: str, overrides: List[str], iters: int, threads: int) -> float:
    """Clips/s of forward+backward+step on random clips (no data loading), one process, with the
    model and input layout train_net uses on the CPU."""
    cfg = for_device(load_config(cfg_path, overrides), torch.device("cpu"))
    torch.set_num_threads(threads)
    model = build_model(cfg.model).train()
    opt = build_optimizer(model, cfg.solver)
    b = cfg.train.batch_size
    x = torch.randn(b, 3, cfg.data.num_frames, cfg.data.train_crop_size, cfg.data.train_crop_size)
    x = x.contiguous(memory_format=torch.channels_last_3d if cfg.model.channels_last else torch.contiguous_format)
    y = torch.randint(0, cfg.model.num_classes, (b,))
    for i in range(iters + 2):
        if i == 2:  # warm-up iterations excluded
            t0 = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return b * iters / (time.perf_counter() - t0)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmark.py train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("suite")
    p.add_argument("--config", default=DEMO_CFG)
    p.add_argument("--data", default="", help="synthetic dataset root (default: generate a small one)")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("opts", nargs="*", default=[], help="key=value overrides for every run")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        data = args.data
        if not data:
            data = os.path.join(tmp, "synthetic")
            num_classes = load_config(args.config, args.opts).model.num_classes
            make_synthetic_dataset(data, num_classes=num_classes, train_per_class=16, val_per_class=1, seed=0)
        print(
            f"device: cpu ({os.cpu_count()} cores; torch {torch.__version__}; "
            f"CUDA {'available' if torch.cuda.is_available() else 'not available: no GPU run'})"
        )
        print(
            f"config: {os.path.relpath(args.config, REPO)} {' '.join(args.opts)}; "
            f"{args.epochs} epochs per run, last epoch timed"
        )
        rows = []
        for n in args.nproc:
            # torchrun sets OMP_NUM_THREADS=1 per process; a plain process uses all cores unless told.
            for threads in [None, 1] if n == 1 else [None]:
                r = _train_run(
                    n, args.config, data, os.path.join(tmp, f"run{n}_{threads}"), args.epochs, args.opts, threads
                )
                what = (
                    (f"{torch.get_num_threads()} threads (default)" if threads is None else "OMP_NUM_THREADS=1")
                    if n == 1
                    else "torchrun, 1 thread each"
                )
                rows.append((f"train_net, {n} process{'es' if n > 1 else ''}, {what}", r))
        threads = 1
        bound = _model_only(args.config, args.opts, iters=20, threads=threads)
    base = rows[0][1]["clips_per_s"]
    print(f"\n| run | clips/s | data wait | vs {rows[0][0]} |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['clips_per_s']:.1f} | {100 * r['data_wait']:.0f}% | {r['clips_per_s'] / base:.2f}x |")
    print(
        f"| model only (random tensors, 1 process, {threads} thread{'s' if threads > 1 else ''}) "
        f"| {bound:.1f} | - | {bound / base:.2f}x |"
    )
    return 0
