"""Model sections of ``tools/benchmarks/gpu.py``: training-step throughput / memory / MFU of the
I3D R50 family against pytorchvideo's ``i3d_r50``, and the non-local block's paths and SDPA kernels.

Timing: ``warmup`` untimed calls, then ``iters`` timed ones; on CUDA each timed call sits between
two CUDA events (no host sync inside the loop; one synchronize at the end), on CPU between
``perf_counter`` reads; the median per-call time is reported. Peak memory (CUDA only):
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the start of the timed calls.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from videoattn.config import load_config
from videoattn.models import build_model
from videoattn.models.builder import to_channels_last_3d
from videoattn.models.info import count_flops, count_params
from videoattn.models.nonlocal_block import NonLocal3d, attention_path

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets. First match wins.
PEAK_BF16_TFLOPS: List[Tuple[Tuple[str, ...], float]] = [
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H200", "NVL"), 835.0),
    (("GH200",), 989.4),
    (("H200",), 989.4),
    (("H100",), 989.4),
    (("A100",), 312.0),
]
FLOPS_CONVENTION = (
    "MFU = clips/s x 6 x MACs per clip / peak: count_flops gives multiply-adds (MACs) of one "
    "eval forward; 2 FLOPs per MAC; training = 3x forward (backward ~ 2x forward)"
)
OURS = ("I3D_R50", "I3D_NL_R50", "I3D_NL_CBAM_R50")
BASELINE = "pytorchvideo i3d_r50"


def peak_bf16_tflops(device_name: str) -> Optional[float]:
    """bf16 dense peak of a GPU named like ``torch.cuda.get_device_name()``; None if unknown."""
    name = device_name.upper()
    for keys, tflops in PEAK_BF16_TFLOPS:
        if all(k in name for k in keys):
            return tflops
    return None


@dataclass
class Settings:
    device: torch.device
    batch: int
    frames: int
    crop: int
    amp: Optional[torch.dtype]  # autocast dtype (None: float32)
    warmup: int
    iters: int
    quick: bool  # width-8 R50 layouts instead of the real widths


def measure(fn: Callable[[], None], device: torch.device, warmup: int, iters: int) -> Tuple[float, Optional[int]]:
    """Median seconds per call of ``fn`` and the peak CUDA bytes allocated during the timed calls."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return statistics.median(s.elapsed_time(e) / 1000.0 for s, e in events), torch.cuda.max_memory_allocated(device)


def free_memory(device: torch.device) -> None:
    """Return the last row's CUDA memory before the next one is measured. A no-op on CPU: CPU rows
    carry no memory figures, and a ``gc.collect()`` there costs ~0.1 s of CPU per call (~60 calls in
    a quick run) with nothing to measure."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build(name: str, s: Settings, channels_last: bool = False) -> torch.nn.Module:
    """One of :data:`OURS` (a preset, through ``model.channels_last``) or :data:`BASELINE` (same
    conversion); quick: the same layouts at width 8."""
    if name == BASELINE:
        from pytorchvideo.models.hub import i3d_r50

        model = i3d_r50(pretrained=False, **({"stem_dim_out": 8} if s.quick else {}))
        if (s.frames, s.crop) != (8, 224):  # its head pool is sized for 8x224x224
            model.blocks[-1].pool = torch.nn.AdaptiveAvgPool3d(1)
        return to_channels_last_3d(model) if channels_last else model
    return build_model(
        load_config(
            None,
            [f"model.preset={name}", f"model.channels_last={channels_last}"]
            + (["model.base_channels=8"] if s.quick else []),
        ).model
    )


def train_step(model: torch.nn.Module, s: Settings, channels_last: bool) -> Callable[[], None]:
    """Forward (autocast), cross-entropy, backward and an SGD step on one fixed random batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, 3, s.frames, s.crop, s.crop, generator=gen).to(s.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 400, (s.batch,), generator=gen).to(s.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        with torch.autocast(s.device.type, dtype=s.amp, enabled=s.amp is not None):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def step_row(
    name: str, s: Settings, channels_last: bool, compile_backend: str, macs: int, peak_tflops: Optional[float]
) -> dict:
    """One table row: clips/s, step ms, peak memory, MFU (and compile seconds when compiling)."""
    torch.manual_seed(0)
    model = build(name, s, channels_last).to(s.device).train()  # .to(device) keeps the memory format
    row = {"model": name, "channels_last": channels_last, "compile": compile_backend or False}
    runner = torch.compile(model, backend=compile_backend) if compile_backend else model
    step = train_step(runner, s, channels_last)
    if compile_backend:
        t0 = time.perf_counter()
        step()  # compiles forward and backward
        if s.device.type == "cuda":
            torch.cuda.synchronize(s.device)
        row["compile_s"] = round(time.perf_counter() - t0, 1)
    sec, peak = measure(step, s.device, s.warmup, s.iters)
    clips = s.batch / sec
    achieved = clips * 6 * macs
    row.update(
        step_ms=round(1000 * sec, 2),
        clips_per_s=round(clips, 2),
        peak_mem_mib=round(peak / 2**20) if peak is not None else None,
        tflops=round(achieved / 1e12, 3),
        mfu=round(achieved / (peak_tflops * 1e12), 4) if peak_tflops else None,
    )
    del model, runner, step
    free_memory(s.device)
    if compile_backend:
        torch._dynamo.reset()
    return row


def model_facts(name: str, s: Settings) -> dict:
    """Parameters and multiply-adds per clip (eval forward, meta device: instant)."""
    model = build(name, s)
    return {"params": count_params(model), "macs_per_clip": count_flops(model, (1, 3, s.frames, s.crop, s.crop))}


# -- the non-local block -------------------------------------------------------------------------
SDPA_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def _qkv(block: NonLocal3d, x: torch.Tensor, amp: Optional[torch.dtype], grad: bool):
    with torch.no_grad(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        k, v, _ = block._keys(x)
        q = block._queries(x)
    return tuple(t.contiguous().requires_grad_(grad) for t in (q, k, v))


def _sdpa_call(block, qkv, amp, grad: bool) -> None:
    with torch.autocast(qkv[0].device.type, dtype=amp, enabled=amp is not None):
        out = block.aggregate(*qkv)
    if grad:
        out.float().sum().backward()


def sdpa_kernels(block: NonLocal3d, x: torch.Tensor, amp: Optional[torch.dtype]) -> dict:
    """Which SDPA backends accept this block's attention (forced one at a time with ``sdpa_kernel``),
    and which one runs by default (the profiler's aten op names), forward and forward+backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block.path = "sdpa"
    out: dict = {}
    for grad in (False, True):
        qkv = _qkv(block, x, amp, grad)
        works = {}
        for backend in (
            SDPBackend.FLASH_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION,
            SDPBackend.CUDNN_ATTENTION,
            SDPBackend.MATH,
        ):
            try:
                with sdpa_kernel([backend]):
                    _sdpa_call(block, qkv, amp, grad)
                works[backend.name.lower()] = "ok"
            except RuntimeError as e:  # "No available kernel", unsupported head dim / dtype
                works[backend.name.lower()] = "no: " + str(e).strip().splitlines()[0][:120]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            _sdpa_call(block, qkv, amp, grad)
        ran = sorted({SDPA_OPS[op] for op in (e.name.replace("aten::", "") for e in prof.events()) if op in SDPA_OPS})
        out["fwd+bwd" if grad else "fwd"] = {"backends": works, "default": ran}
    block.path = "auto"
    return out


def nonlocal_rows(
    C: int,
    sub: Tuple[int, int, int],
    shape: Tuple[int, int, int, int],
    amp,
    device,
    warmup: int,
    iters: int,
    passes: Tuple[bool, ...] = (False, True),
) -> List[dict]:
    """Whole block (projections, attention, output conv, BN, residual), train mode, explicit vs SDPA
    path, forward and forward+backward; memory = peak growth over the block and its input (CUDA)."""
    torch.manual_seed(0)
    B, T, H, W = shape
    block = NonLocal3d(C, C // 2, "embedded_gaussian", sub).to(device).train()
    torch.nn.init.normal_(block.bn.weight)  # not the identity-at-init block
    x = torch.randn(B, C, T, H, W, device=device)
    N, M = T * H * W, (T // sub[0]) * (H // sub[1]) * (W // sub[2])
    elt = 2 if amp is not None else 4
    rows = []
    for grad in passes:
        xi = x.clone().requires_grad_(grad)
        auto = attention_path(device, B, N, M, C // 2, training=grad)  # what the block's "auto" picks here
        row = {
            "C": C,
            "subsample": "x".join(map(str, sub)),
            "dtype": str(amp or torch.float32).replace("torch.", ""),
            "pass": "fwd+bwd" if grad else "fwd",
            "device": device.type,
            "B": B,
            "N": N,
            "M": M,
            "auto_path": auto,
            "nm_matrix_mib": round(B * N * M * elt / 2**20, 1),
        }
        for path in ("explicit", "sdpa"):
            block.path = path

            def run() -> None:
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None), torch.set_grad_enabled(grad):
                    out = block(xi)
                if grad:
                    out.float().sum().backward()
                    xi.grad = None

            free_memory(device)
            base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            sec, peak = measure(run, device, warmup, iters)
            row[f"{path}_ms"] = round(1000 * sec, 3)
            row[f"{path}_mib"] = round((peak - base) / 2**20, 1) if peak is not None else None
        block.path = "auto"
        row["auto_vs_explicit"] = round(row[f"{auto}_ms"] / row["explicit_ms"], 3)
        if row["sdpa_mib"] is not None:
            row["sdpa_builds_matrix"] = row["sdpa_mib"] >= row["nm_matrix_mib"]
            row["memory_ratio"] = round(row["explicit_mib"] / max(row["sdpa_mib"], 0.1), 1)
        rows.append(row)
    return rows
