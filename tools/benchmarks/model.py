"""``tools/benchmark.py model``: backbone training throughput and non-local memory/time.

Table 1 -- forward+backward clips/s of I3D R50 (8x224x224, batch 2, train mode) for this
package's model (contiguous and channels_last_3d) against pytorchvideo's ``i3d_r50`` with the
same weights on the identical input, measured interleaved in the same process. Reported: best
wall-clock time per iteration and best CPU-seconds (this process, all threads) per iteration;
the ratio vs pytorchvideo uses CPU time, which other processes sharing the cores disturb far
less than wall-clock time.

Table 2 -- the non-local block (C=512, inter 256, 8x28x28 input, batch 1), SDPA version (this
package) vs the explicit (THW x THW') matrix version (PySlowFast's einsum + softmax), for the
presets' 1x2x2 subsampling of phi/g and for none; "core" is the attention alone (q, k, v -> y),
"block" the whole block (1x1x1 projections, attention, output conv, BN, residual), inference
and training passes. Peak memory is the growth of the process's peak resident set size over
one pass (Linux VmHWM, reset through ``/proc/self/clear_refs`` once weights and inputs exist),
each in a fresh 1-thread subprocess, so it counts every buffer the pass touches (activations
kept for backward included); time is the best of a few passes in this process.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from typing import Callable, List

import torch

from videoattn.config import load_config
from videoattn.models import build_model
from videoattn.models.builder import to_channels_last_3d
from videoattn.models.convert import convert_state_dict
from videoattn.models.nonlocal_block import NonLocal3d


# -- non-local baseline: the explicit matrix, as PySlowFast computes it -------------------------
def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with the (B, N, M) matrix materialised: (B, N, d), (B, M, d), (B, M, e)."""
    return torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, dim=-1) @ v


def explicit_nonlocal(block: NonLocal3d, x: torch.Tensor) -> torch.Tensor:
    """Embedded-Gaussian non-local block built around :func:`explicit_attention` (PySlowFast's way)."""
    B, C, T, H, W = x.shape
    theta = block.theta(x).flatten(2).transpose(1, 2)
    xp = block.pool(x) if block.pool is not None else x
    phi, g = block.phi(xp).flatten(2).transpose(1, 2), block.g(xp).flatten(2).transpose(1, 2)
    y = explicit_attention(theta, phi, g).transpose(1, 2).reshape(B, -1, T, H, W)
    return x + block.bn(block.out(y))


def _nl_setup(scope: str, subsample: int, train: bool):
    """The non-local block (C=512, 8x28x28) and the input of the measured ``scope``:
    "block" -> x (1, 512, 8, 28, 28); "core" -> (q, k, v) as the block computes them."""
    torch.manual_seed(0)
    block = NonLocal3d(512, 256, "embedded_gaussian", (1, subsample, subsample), path="sdpa").train(train)
    torch.nn.init.normal_(block.bn.weight)  # not the identity-at-init block
    x = torch.randn(1, 512, 8, 28, 28)
    if scope == "block":
        return block, (x.requires_grad_(train),)
    with torch.no_grad():
        k, v, _ = block._keys(x)
        q = block._queries(x)
    return block, tuple(t.contiguous().requires_grad_(train) for t in (q, k, v))


def _nl_pass(block: NonLocal3d, inputs, scope: str, variant: str, train: bool) -> None:
    if scope == "block":
        fn = block if variant == "sdpa" else (lambda x: explicit_nonlocal(block, x))
    else:
        fn = block.aggregate if variant == "sdpa" else explicit_attention
    if train:
        fn(*inputs).sum().backward()
    else:
        with torch.no_grad():
            fn(*inputs)


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; return that RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def _nl_memory_worker(spec: str) -> int:
    """Subprocess body: print the peak-RSS growth (MiB) of one pass, as JSON."""
    scope, variant, subsample, mode = spec.split(",")
    torch.set_num_threads(1)
    block, inputs = _nl_setup(scope, int(subsample), mode == "train")
    before = _reset_peak_rss()
    _nl_pass(block, inputs, scope, variant, mode == "train")
    print(json.dumps({"peak_mib": _status_mib("VmHWM") - before}))
    return 0


def _nl_memory(scope: str, variant: str, subsample: int, mode: str) -> float:
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark.py"),
            "model",
            "--nl-memory-worker",
            f"{scope},{variant},{subsample},{mode}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]


def _best_time(fn: Callable[[], None], iters: int, warmup: int = 1) -> float:
    """Best of ``iters`` timed calls after ``warmup`` untimed ones (robust to background load)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# -- backbone ---------------------------------------------------------------------------------
def _train_step(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return step


def backbone_table(iters: int, batch: int, frames: int, crop: int) -> List[str]:
    from pytorchvideo.models.hub import i3d_r50

    torch.manual_seed(0)
    x = torch.randn(batch, 3, frames, crop, crop)
    ref = i3d_r50(pretrained=False).train()
    if (frames, crop) != (8, 224):  # pytorchvideo's head pool is sized for 8x224x224
        ref.blocks[-1].pool = torch.nn.AdaptiveAvgPool3d(1)
    # Same weights in both (converted), so both compute the same numbers: only the
    # implementation differs (no zero-init or denormal effects on the timings).
    ours = build_model(load_config(None, ["model.preset=I3D_R50"]).model)
    ours.load_state_dict(convert_state_dict("pytorchvideo", ref.state_dict(), ours)[0])
    ours.train()
    ours_cl = to_channels_last_3d(copy.deepcopy(ours))
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    runs = {
        "pytorchvideo i3d_r50 (baseline)": _train_step(ref, x),
        "videoattn I3D_R50": _train_step(ours, x),
        "videoattn I3D_R50, channels_last_3d": _train_step(ours_cl, x_cl),
    }
    for step in runs.values():  # warm-up (allocator, oneDNN primitives)
        step()
    wall: dict = {name: [] for name in runs}
    cpu: dict = {name: [] for name in runs}
    for _ in range(iters):  # interleaved, so background load hits every variant alike
        for name, step in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    # Wall-clock: best of N (background load only adds time). CPU-seconds of this process (all
    # threads) per iteration: far less sensitive to other processes sharing the cores; the ratio
    # column uses it.
    base = min(cpu["pytorchvideo i3d_r50 (baseline)"])
    lines = [
        f"I3D R50 forward+backward, {batch}x3x{frames}x{crop}x{crop}, train mode, same weights, "
        f"{torch.get_num_threads()} threads, {iters} interleaved iterations after a warm-up",
        "",
        "| model | wall s/iter (best) | clips/s (wall) | CPU s/iter (best) | speed ratio vs pytorchvideo (CPU time) |",
        "|---|---|---|---|---|",
    ]
    for name in runs:
        w, c = min(wall[name]), min(cpu[name])
        lines.append(f"| {name} | {w:.2f} | {batch / w:.3f} | {c:.2f} | {base / c:.2f}x |")
    return lines


def nonlocal_table(iters: int) -> List[str]:
    lines = [
        "Non-local block, C=512 (inter 256), input 1x512x8x28x28, embedded Gaussian. 'core' = the "
        "attention alone (q, k, v -> y), 'block' = the whole block (projections, attention, output conv, "
        f"BN, residual). Time: best of {iters}, {torch.get_num_threads()} threads. Memory: peak-RSS growth "
        "of one pass in a fresh 1-thread subprocess.",
        "",
        "| scope | phi/g subsample | pass | explicit matrix (ms) | SDPA (ms) | explicit (MiB) | SDPA (MiB) "
        "| memory: SDPA uses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scope in ("core", "block"):
        for subsample in (2, 1):
            for mode in ("inference", "train"):
                train = mode == "train"
                block, inputs = _nl_setup(scope, subsample, train)
                with torch.no_grad():
                    if scope == "block":
                        a, b = block(*inputs), explicit_nonlocal(block, *inputs)
                    else:
                        a, b = block.aggregate(*inputs), explicit_attention(*inputs)
                diff = ((a - b).abs().max() / b.abs().max()).item()
                assert diff < 1e-4, f"SDPA and explicit non-local differ (relative {diff:.2e})"
                t = {
                    v: _best_time(lambda: _nl_pass(block, inputs, scope, v, train), iters) for v in ("explicit", "sdpa")
                }
                m = {v: _nl_memory(scope, v, subsample, mode) for v in ("explicit", "sdpa")}
                label = f"1x{subsample}x{subsample}" if subsample > 1 else "none"
                lines.append(
                    f"| {scope} | {label} | {'fwd' if not train else 'fwd+bwd'} | {1000 * t['explicit']:.0f} "
                    f"| {1000 * t['sdpa']:.0f} | {m['explicit']:.1f} | {m['sdpa']:.1f} "
                    f"| {m['explicit'] / max(m['sdpa'], 0.1):.1f}x less |"
                )
    return lines


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="tools/benchmark.py model", description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per variant")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--skip-backbone", action="store_true")
    parser.add_argument("--skip-nonlocal", action="store_true")
    parser.add_argument("--nl-memory-worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv[1:])
    if args.nl_memory_worker:
        return _nl_memory_worker(args.nl_memory_worker)
    if not args.skip_backbone:
        print("\n".join(backbone_table(args.iters, args.batch, args.frames, args.crop)), flush=True)
        print()
    if not args.skip_nonlocal:
        print("\n".join(nonlocal_table(args.iters)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
