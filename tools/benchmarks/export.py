"""``tools/benchmark.py export``: onnxruntime (CPU) vs eager PyTorch per clip, and every preset exported.

Table 1 -- time per clip (batch 1, eval mode, float32) of the same weights through eager PyTorch
and through the ONNX file tools/export.py writes, run by onnxruntime's CPU provider, at 1 and 2
threads (``torch.set_num_threads`` / ``intra_op_num_threads``, the same count for both). The
variants run interleaved (A, B, A, B, ...) after a warm-up, so load from other processes hits
both alike. Reported: the median and best wall time per clip, the median CPU time of this process
per clip, and the ratio of medians (eager / onnxruntime: > 1 means onnxruntime is faster).

Table 2 (``--check-all``) -- every preset (and, on the demo preset, every non-local attention
kind and CBAM form; the R50 presets hold the same blocks) exported as tools/export.py does it (torch.export, then
ONNX), at a quarter of the width: which input dimensions are dynamic, and the largest difference
from eager of the ONNX file (onnxruntime) and of the torch.export program on two input shapes
(the export example and one that differs in every dynamic dimension, batch 1). Random weights with
BN scales ~1 make the deep presets' logits large (I3D_NL_R50's reach ~1e3), and float32 rounding
is relative to them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import time
from typing import Callable, Dict, List

import torch

from videoattn.apps.export import DimSpec, check_export, export_module, onnx_runner, probe_shape
from videoattn.config import load_config
from videoattn.engine.device import for_device
from videoattn.models import build_model
from videoattn.models.presets import PRESETS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
SETUPS: Dict[str, tuple] = {  # name -> (config file, overrides)
    "demo (I3D_NL_CBAM_R18, 8x32x32)": (DEMO_CFG, []),
    "I3D_NL_CBAM_R50, 8x224x224": (None, ["model.preset=I3D_NL_CBAM_R50", "data.test_crop_size=224"]),
}


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised BN scales set to ~1 (as a trained model's), so no branch is skipped."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and float(p.abs().sum()) == 0 and "weight" in name:
                p.normal_(1.0, 0.3)
    return model.eval()


def _logits_scaled(model: torch.nn.Module, cfg, scale: float = 10.0) -> torch.nn.Module:
    """The head rescaled so that the largest |logit| on a random clip is ``scale``, as a trained
    classifier's are (|logits| ~ 1-20): random BN scales ~1 otherwise give a deep preset logits of
    ~1e3 (I3D_NL_R50: 1175), where float32 alone rounds at ~1e-4, so an absolute tolerance of 1e-4
    would test the number format rather than the export."""
    clip = torch.randn(2, 3, cfg.data.num_frames, cfg.data.test_crop_size, cfg.data.test_crop_size)
    with torch.no_grad():
        peak = float(model(clip).abs().max())
        model.head.proj.weight.mul_(scale / peak)
        model.head.proj.bias.mul_(scale / peak)
    return model


def _export(cfg, seed: int = 0, scaled: bool = False):
    torch.manual_seed(seed)
    model = _randomised(build_model(cfg.model))
    if scaled:
        model = _logits_scaled(model, cfg)
    names = [f"class_{i}" for i in range(cfg.model.num_classes)]
    return model, export_module(copy.deepcopy(model), cfg, "onnx", 20, "random initialisation", names)


def _interleaved(runs: Dict[str, Callable[[], object]], iters: int) -> Dict[str, dict]:
    for fn in runs.values():  # warm-up: allocator, oneDNN primitives, onnxruntime's first run
        fn()
    wall: Dict[str, List[float]] = {k: [] for k in runs}
    cpu: Dict[str, List[float]] = {k: [] for k in runs}
    for _ in range(iters):
        for name, fn in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    med = statistics.median
    return {k: {"median": med(wall[k]), "best": min(wall[k]), "cpu": med(cpu[k])} for k in runs}


def speed_table(setups: List[str], threads: List[int], iters: int) -> List[str]:
    lines = [
        f"Time per clip, batch 1, float32, {iters} interleaved iterations per variant after a warm-up "
        f"(load average {os.getloadavg()[0]:.1f} at the start)",
        "",
        "| setup | threads | eager | eager PyTorch ms (median / best) | onnxruntime ms (median / best) "
        "| CPU ms eager / onnxruntime | eager / onnxruntime (median wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup in setups:
        path, overrides = SETUPS[setup]
        cfg = for_device(load_config(path, overrides), torch.device("cpu"))  # as predict runs it
        model, exported = _export(cfg)
        x = torch.randn(1, 3, cfg.data.num_frames, cfg.data.test_crop_size, cfg.data.test_crop_size)
        eager = {"predict's layout": (model, x)}  # channels_last_3d weights and input: the CPU default
        if cfg.model.channels_last:
            plain = _randomised(build_model(dataclasses.replace(cfg.model, channels_last=False)))
            plain.load_state_dict(model.state_dict())
            x_cl = x.contiguous(memory_format=torch.channels_last_3d)
            eager = {"channels_last_3d": (model, x_cl), "NCDHW": (plain, x)}
        for n in threads:
            torch.set_num_threads(n)
            onnx = onnx_runner(_proto(exported.data), threads=n)
            runs = {k: (lambda m=m, v=v: m(v)) for k, (m, v) in eager.items()}
            with torch.inference_mode():
                t = _interleaved(dict(runs, onnx=lambda: onnx(x)), iters)
            o = t["onnx"]
            for name in eager:
                e = t[name]
                lines.append(
                    f"| {setup} | {n} | eager {name} | {1000 * e['median']:.1f} / {1000 * e['best']:.1f} "
                    f"| {1000 * o['median']:.1f} / {1000 * o['best']:.1f} "
                    f"| {1000 * e['cpu']:.1f} / {1000 * o['cpu']:.1f} | {e['median'] / o['median']:.2f}x |"
                )
            print(lines[-1], flush=True)
    return lines


def _proto(data: bytes):
    import onnx

    return onnx.load_from_string(data)


def _check_cases() -> List[tuple]:
    cases = [(p, "", "") for p in PRESETS]
    for preset in ("I3D_NL_CBAM_R18",):  # the blocks are the same code in the R50 presets
        cases += [(preset, f"model.non_local.attention={k}", "") for k in ("local", "axial", "linear")]
        cases += [(preset, "", f"model.cbam.variant={v}") for v in ("article", "legacy")]
    return cases


def check_table(frames: int, crop: int, presets: List[str], scaled: bool) -> List[str]:
    lines = [
        f"Every preset exported (ONNX via torch.export), base width / 4, {frames}x{crop}x{crop} clips, 5 classes; "
        "max |exported - eager| on the example and on a batch-1 shape differing in every dynamic dimension"
        + ("; head scaled so that |logits| <= 10 on a random clip" if scaled else ""),
        "",
        "| preset | setting | dynamic | shapes checked | ONNX (onnxruntime) | torch.export | export s |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for preset, *extra in [c for c in _check_cases() if not presets or c[0] in presets]:
        base = {"I3D_NL_CBAM_R18": 4, "C2D_R18": 4}.get(preset, 16)
        overrides = [f"model.preset={preset}", f"model.base_channels={base}", "model.num_classes=5"]
        overrides += [f"data.num_frames={frames}", f"data.test_crop_size={crop}"] + [e for e in extra if e]
        t0 = time.perf_counter()
        model, exported = _export(load_config(None, overrides), scaled=scaled)
        seconds = time.perf_counter() - t0
        dims = exported.record["input_dims"]
        specs = [DimSpec(**d) for d in dims]
        shapes = [[d.size for d in specs], probe_shape(specs)]
        ort_check = check_export(model, onnx_runner(_proto(exported.data)), shapes)
        ep_check = check_export(model, exported.program.module(), shapes)
        dynamic = ", ".join(d["name"] for d in dims if d["dynamic"])
        lines.append(
            f"| {preset} | {' '.join(e for e in extra if e) or 'preset'} | {dynamic} "
            f"| {' and '.join('x'.join(map(str, s)) for s in shapes)} | {ort_check['max_abs_diff']:.1e} "
            f"| {ep_check['max_abs_diff']:.1e} | {seconds:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="tools/benchmark.py export", description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS), help="table 1 (none: skip)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iters", type=int, default=20, help="timed clips per variant and thread count")
    parser.add_argument("--check-all", action="store_true", help="also export every preset and check it (table 2)")
    parser.add_argument("--frames", type=int, default=8, help="--check-all clips: frames")
    parser.add_argument("--crop", type=int, default=64, help="--check-all clips: crop size")
    parser.add_argument("--presets", nargs="*", default=[], help="--check-all: only these presets")
    parser.add_argument("--scaled-logits", action="store_true", help="--check-all: head scaled to |logits| <= 10")
    args = parser.parse_args(argv[1:])
    if args.setups:
        print("\n".join(speed_table(args.setups, args.threads, args.iters)), flush=True)
    if args.check_all:
        print()
        check_table(args.frames, args.crop, args.presets, args.scaled_logits)
    return 0
