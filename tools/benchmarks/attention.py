"""``tools/benchmark.py attention``: what each ``model.non_local.attention`` kind costs.

Table 1 -- the non-local block (embedded Gaussian, inter C/2, subsample 1x2x2, local window the
default 8x14x14) at C = 512 / 1024 on feature maps 8x14x14 ... 32x56x56, batch 1 and 4, one
column per kind: full attention through SDPA and through the explicit N x M matrix, local, axial,
linear. Each cell: forward (eval, no grad) / forward+backward (train) time, and the peak memory of
one such pass.

Table 2 -- the whole I3D_NL_R50 train step (forward+backward, batch 1, 224x224, channels_last_3d as
the CPU default) per kind at 8 and 32 frames.

How: every row runs in its own child process (forked before the parent ever computed, one thread),
so rows neither share allocator state nor disturb each other. Time is the child's CPU seconds
(best of ``--iters`` after a first pass), which other processes on the shared cores disturb far
less than wall time (wall is printed for the train step). Peak memory is the growth of the child's
peak resident set size (Linux VmHWM, reset through ``/proc/self/clear_refs`` once weights and
inputs exist) over that pass: PyTorch keeps no CPU allocator statistics, so the kernel's count is
the measure (it includes every buffer the pass touches).

Rows are not run where they would exceed a budget: sizes in ascending cost, each row's time and
memory projected from the last measured row of its column (same C) scaled by the operation count
and by the activation / matrix size. A row projected over ``--limit`` CPU seconds (forward+backward)
is "skipped, projected X s"; one whose explicit matrix (batch x N x M float32) or projected peak
exceeds ``--memory-gib`` is "over budget". Those are the sizes the cheap kinds open up.
"""

from __future__ import annotations

import argparse
import datetime
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from videoattn.config import load_config
from videoattn.models import build_model
from videoattn.models.attention_kinds import fit_window
from videoattn.models.nonlocal_block import NonLocal3d

GiB = 1 << 30
SUBSAMPLE = (1, 2, 2)
WINDOW = (8, 14, 14)  # the config default (model.non_local.window)
# column -> (attention kind, softmax path)
COLUMNS: Dict[str, Tuple[str, str]] = {
    "full SDPA": ("full", "sdpa"),
    "full explicit": ("full", "explicit"),
    "local": ("local", "auto"),
    "axial": ("axial", "auto"),
    "linear": ("linear", "auto"),
}
MAPS = ((8, 14, 14), (8, 28, 28), (16, 28, 28), (16, 56, 56), (32, 56, 56))
QUICK_MAPS = ((4, 8, 8), (8, 8, 8))


@dataclass
class BlockCase:
    channels: int
    grid: Tuple[int, int, int]
    batch: int
    column: str

    @property
    def keys(self) -> int:
        return math.prod(math.ceil(n / s) for n, s in zip(self.grid, SUBSAMPLE))

    @property
    def queries(self) -> int:
        return math.prod(self.grid)

    def matrix_bytes(self) -> int:
        """One float32 batch x N x M attention matrix (what the explicit path builds)."""
        return 4 * self.batch * self.queries * self.keys

    def flops(self) -> float:
        """Forward multiply-adds x 2 of the block: projections + the kind's attention."""
        B, C, N, M, d = self.batch, self.channels, self.queries, self.keys, self.channels // 2
        kind = COLUMNS[self.column][0]
        if kind == "full":
            attn = 4 * N * M * d
        elif kind == "local":
            attn = 4 * N * math.prod(w // s for w, s in zip(fit_window(WINDOW, self.grid, SUBSAMPLE), SUBSAMPLE)) * d
        elif kind == "axial":
            kt, kh, kw = (math.ceil(n / s) for n, s in zip(self.grid, SUBSAMPLE))
            attn = 4 * d * (M * (kt + kh) + N * kw)
        else:
            attn = 4 * d * d * (N + M)
        return B * (2 * C * d * (2 * N + 2 * M) + attn)

    def activation_bytes(self) -> float:
        """What the peak memory scales with: the block's (B, C, N) tensors, and the matrix on the explicit path."""
        explicit = self.column == "full explicit"
        return 4 * self.batch * self.queries * self.channels + (3 * self.matrix_bytes() if explicit else 0)


@dataclass
class Measured:
    fwd_s: float = math.nan  # CPU seconds, best of iters
    train_s: float = math.nan
    fwd_mib: float = math.nan  # peak-RSS growth of one pass
    train_mib: float = math.nan
    wall_s: float = math.nan  # forward+backward wall seconds (best)
    note: str = ""  # set instead of numbers: skipped / over budget / failed

    def cell(self) -> str:
        if self.note:
            return self.note
        return f"{_seconds(self.fwd_s)} / {_seconds(self.train_s)}, {self.fwd_mib:.0f} / {self.train_mib:.0f} MiB"


def _bytes(b: float) -> str:
    return f"{b / GiB:.1f} GiB" if b >= GiB / 10 else f"{b / (1 << 20):.2g} MiB"


def _seconds(s: float) -> str:
    return f"{1000 * s:.1f} ms" if s < 0.1 else f"{s:.2f} s" if s < 10 else f"{s:.0f} s"


# -- measuring, in a forked child -------------------------------------------------------------------
def _status_mib(name: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"{name} not in /proc/self/status")


def _peak_growth(fn: Callable[[], None]) -> float:
    """Run ``fn`` once; the growth of the peak RSS over the RSS before it (MiB)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_mib("VmRSS")
    fn()
    return _status_mib("VmHWM") - before


def _best(fn: Callable[[], None], iters: int) -> Tuple[float, float]:
    """Best CPU seconds and best wall seconds of ``iters`` calls."""
    cpu, wall = [], []
    for _ in range(iters):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


def _measure(make: Callable[[], Tuple[Callable[[], None], Callable[[], None]]], iters: int) -> Measured:
    """``make() -> (forward, train_step)``; each measured for memory (first pass) then time."""
    forward, train_step = make()
    m = Measured()
    if forward is not None:
        m.fwd_mib = _peak_growth(forward)
        m.fwd_s = _best(forward, iters)[0]
    m.train_mib = _peak_growth(train_step)
    m.train_s, m.wall_s = _best(train_step, iters)
    return m


def _block_passes(case: BlockCase):
    kind, path = COLUMNS[case.column]
    torch.manual_seed(0)
    C = case.channels
    block = NonLocal3d(C, C // 2, "embedded_gaussian", SUBSAMPLE, path, attention=kind, window=WINDOW)
    torch.nn.init.normal_(block.bn.weight)  # not the identity-at-init block
    x = torch.randn(case.batch, C, *case.grid)
    xg = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            block.eval()(x)

    def train_step():
        block.train()(xg).sum().backward()
        xg.grad = None
        block.zero_grad(set_to_none=True)

    return forward, train_step


def _step_passes(overrides: Sequence[str], frames: int, crop: int):
    torch.manual_seed(0)
    model = build_model(load_config(None, ["model.channels_last=true", "model.dropout=0"] + list(overrides)).model)
    x = torch.randn(1, 3, frames, crop, crop).contiguous(memory_format=torch.channels_last_3d)
    label = torch.zeros(1, dtype=torch.long)

    def train_step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), label).backward()

    return None, train_step


def _child(conn, make, iters: int) -> None:
    torch.set_num_threads(1)
    try:
        conn.send(_measure(make, iters))
    except Exception as e:  # noqa: BLE001 -- reported in the row, the table goes on
        conn.send(Measured(note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"))


def run_forked(make: Callable, iters: int, timeout_s: float) -> Measured:
    """Measure ``make``'s passes in a forked one-thread child; a child past ``timeout_s`` is killed."""
    parent, child = mp.get_context("fork").Pipe(duplex=False)
    proc = mp.get_context("fork").Process(target=_child, args=(child, make, iters))
    proc.start()
    result = parent.recv() if parent.poll(timeout_s) else Measured(note=f"killed after {timeout_s:.0f} s wall")
    if proc.is_alive() and result.note.startswith("killed"):
        proc.kill()
    proc.join()
    if not result.note and proc.exitcode not in (0, None):
        result.note = f"failed: exit code {proc.exitcode}"
    return result


# -- the tables -------------------------------------------------------------------------------------
@dataclass
class Budget:
    limit_s: float  # projected forward+backward CPU seconds of one row
    memory_bytes: float
    iters: int
    measured: Dict[Tuple[str, int], Tuple[BlockCase, Measured]] = field(default_factory=dict)

    def verdict(self, case: BlockCase) -> Optional[str]:
        """Why ``case`` is not run, or None."""
        if case.column == "full explicit" and case.matrix_bytes() > self.memory_bytes:
            return f"over budget: matrix {_bytes(case.matrix_bytes())}"
        last = self.measured.get((case.column, case.channels))
        if last is None:
            return None
        ref, m = last
        mem = m.train_mib * (1 << 20) * case.activation_bytes() / ref.activation_bytes()
        if mem > self.memory_bytes:
            return f"over budget: projected {_bytes(mem)}"
        projected = m.train_s * case.flops() / ref.flops()
        return f"skipped, projected {_seconds(projected)}" if projected > self.limit_s else None

    def run(self, case: BlockCase) -> Measured:
        why = self.verdict(case)
        if why:
            return Measured(note=why)
        m = run_forked(lambda: _block_passes(case), self.iters, timeout_s=60 * self.limit_s + 120)
        if not m.note:
            self.measured[(case.column, case.channels)] = (case, m)
        return m


def block_table(channels: Sequence[int], maps: Sequence, batches: Sequence[int], budget: Budget) -> List[str]:
    lines = [
        f"| C | map TxHxW | batch | N x M | explicit matrix | {' | '.join(COLUMNS)} |",
        "|---|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for C in channels:
        for grid in maps:
            for batch in batches:
                cases = [BlockCase(C, tuple(grid), batch, col) for col in COLUMNS]
                cells = [budget.run(case).cell() for case in cases]
                first = cases[0]
                lines.append(
                    f"| {C} | {'x'.join(map(str, grid))} | {batch} | {first.queries} x {first.keys} "
                    f"| {first.matrix_bytes() / GiB:.2f} GiB | {' | '.join(cells)} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)  # progress; the tables go to stdout at the end
    return lines


def step_table(preset: Sequence[str], frames: Sequence[int], crop: int, budget: Budget, limit_s: float) -> List[str]:
    """The train step per kind; a clip is projected from the kind's last measured one (time and
    memory in proportion to the frames) and skipped over ``limit_s`` CPU s or the memory budget."""
    lines = ["| clip | kind | fwd+bwd CPU s | fwd+bwd wall s | peak MiB |", "|---|---|---|---|---|"]
    for kind in ("full", "local", "axial", "linear"):
        last: Optional[Tuple[int, Measured]] = None
        for n in frames:
            scale = n / last[0] if last else 0.0
            memory, projected = (last[1].train_mib * (1 << 20) * scale, last[1].train_s * scale) if last else (0, 0)
            if memory > budget.memory_bytes:
                m = Measured(note=f"over budget: projected {_bytes(memory)}")
            elif projected > limit_s:
                m = Measured(note=f"skipped, projected {_seconds(projected)}")
            else:
                overrides = list(preset) + [f"model.non_local.attention={kind}"]
                m = run_forked(lambda: _step_passes(overrides, n, crop), budget.iters, 60 * limit_s + 300)
                last = (n, m) if not m.note else last
            numbers = f"{m.train_s:.2f} | {m.wall_s:.2f} | {m.train_mib:.0f}"
            lines.append(f"| {n}x{crop}x{crop} | {kind} | {f'{m.note} | |' if m.note else numbers} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def header(budget: Budget, started: float) -> List[str]:
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / (1 << 20)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return [
        f"{datetime.date.today()}, {platform.node() or 'this machine'}: {os.cpu_count()} CPU cores, {mem_gib:.0f} GiB, "
        f"{gpu}; torch {torch.__version__}, 1 thread per row; load average (1 min) at start "
        f"{started:.2f}, at end {os.getloadavg()[0]:.2f}.",
        f"Block cells: forward (eval, no grad) / forward+backward (train) time, CPU seconds of the row's process, "
        f"best of {budget.iters} after a first pass; then the peak-RSS growth over one such pass. "
        f"Budgets: {budget.limit_s:g} CPU s projected per row (forward+backward), {budget.memory_bytes / GiB:g} GiB.",
    ]


def _grid(text: str) -> Tuple[int, int, int]:
    try:
        t, h, w = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not TxHxW (e.g. 16x56x56)") from None
    return t, h, w


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="tools/benchmark.py attention", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=4.0, help="CPU s per row (projected, fwd+bwd)")
    parser.add_argument("--memory-gib", type=float, default=8.0, help="memory budget of one row")
    parser.add_argument("--iters", type=int, default=2, help="timed passes per row (best is kept)")
    parser.add_argument("--step-limit", type=float, default=30.0, help="CPU s per train-step row (projected)")
    parser.add_argument("--frames", type=int, nargs="*", default=[8, 32], help="train-step clips (none: skip)")
    parser.add_argument("--channels", type=int, nargs="+", default=[512, 1024], help="block widths C")
    parser.add_argument("--maps", type=_grid, nargs="+", default=list(MAPS), help="feature maps TxHxW, small first")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    args = parser.parse_args(argv[1:])
    started = os.getloadavg()[0]
    budget = Budget(args.limit, args.memory_gib * GiB, args.iters)
    if args.quick:
        blocks = block_table((32,), QUICK_MAPS, (1,), budget)
        preset, frames, crop = ["model.preset=I3D_NL_R50", "model.base_channels=4", "model.num_classes=4"], [4], 32
    else:
        blocks = block_table(args.channels, args.maps, args.batches, budget)
        preset, frames, crop = ["model.preset=I3D_NL_R50"], args.frames, 224
    steps = step_table(preset, frames, crop, budget, args.step_limit) if frames else []
    print("\n" + "\n\n".join(["\n".join(header(budget, started)), "\n".join(blocks), "\n".join(steps)]))
    return 0
