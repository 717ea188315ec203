"""``tools/ablate.py``: run a grid of (variant x seed) cells, each a real train_net + test_net run in
its own folder, and summarise them (see docs/ablation.md).

    python tools/ablate.py GRID.yaml --output OUT [--jobs N] [--threads T]
    python tools/ablate.py GRID.yaml --output OUT --report-only
    python tools/ablate.py GRID.yaml --output OUT --executor slurm --partition P --time MINUTES [--wait]

Before any cell starts, every cell's config is loaded through the schema and its model built (an
unknown key, a bad value, a model that cannot be built: one line naming the variant), and every
output is claimed (a file the tool did not write is never replaced). Finished cells are skipped;
the others run (again) in their folders, where train_net resumes from its last checkpoint.
Exit status: 0 every cell finished; 1 a bad grid, or some cell failed (the others still ran);
130 / 143 stopped by SIGINT / SIGTERM (the running cells were stopped with a checkpoint).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from videoattn.ablation.cells import TOOL, claim_cell, is_done
from videoattn.ablation.cost import model_costs
from videoattn.ablation.grid import Grid, load_cell_configs, load_grid
from videoattn.ablation.report import RESULTS, collect, write_results
from videoattn.ablation.run import CellJob, cell_job, child_env, run_cells
from videoattn.ablation.slurm import add_slurm_arguments, submit_cells
from videoattn.ablation.summary import PLOT, SUMMARY, write_plot, write_summary
from videoattn.utils.errors import OneLineError, UsageError
from videoattn.utils.io import make_folder
from videoattn.utils.outputs import claim_outputs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run an ablation grid (variants x seeds): each cell trains with tools/train_net.py under "
        "torchrun and tests with tools/test_net.py in OUT/<variant>/seed<k>/; writes OUT/results.csv, "
        "OUT/summary.md and OUT/summary.png.",
    )
    p.add_argument("grid", help="grid file (YAML), see docs/ablation.md")
    p.add_argument("--output", required=True, help="output folder (a rerun continues it)")
    p.add_argument("--jobs", type=int, default=1, help="cells run side by side (default 1)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every cell process")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables from the cells' files")
    p.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local")
    add_slurm_arguments(p)
    return p


def write_report(grid: Grid, out: str, plot: bool = True) -> None:
    """results.csv and summary.md (and summary.png) from the cells' own files."""
    rows = collect(grid, out)
    write_results(rows, out)
    write_summary(grid, rows, out)
    if plot:
        write_plot(grid, rows, out)


def prepare(args: argparse.Namespace, tools_dir: str) -> tuple:
    """Check the arguments and the grid, claim every output; returns (grid, out, jobs of the
    unfinished cells)."""
    for name in ("jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name}={value} must be >= 1")
    grid = load_grid(args.grid)
    out = os.path.abspath(args.output)
    make_folder(out)
    claim_outputs(out, TOOL, [RESULTS, SUMMARY, PLOT], hint="use another --output")
    if args.report_only:
        return grid, out, []
    costs = model_costs(grid, load_cell_configs(grid, out))
    folders = {cell: claim_cell(grid, cell, out, costs[cell]) for cell in grid.run_order()}
    jobs = [cell_job(grid, c, f, tools_dir) for c, f in folders.items() if not is_done(f)]
    return grid, out, jobs


def _finish(grid: Grid, out: str, jobs: List[CellJob], outcome) -> int:
    write_report(grid, out)
    print(f"tables: {os.path.join(out, RESULTS)} {os.path.join(out, SUMMARY)} {os.path.join(out, PLOT)}", flush=True)
    if outcome.stopped_by:
        print(f"stopped: rerun the same command to continue ({len(outcome.done)} cell(s) finished in this run)")
        return 128 + outcome.stopped_by
    if outcome.failed:
        names = ", ".join(c.name for c in outcome.failed)
        print(f"error: {len(outcome.failed)} of {len(jobs)} cell(s) failed: {names}; see results.csv", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None, tools_dir: str = "") -> int:
    """``tools_dir``: the folder of train_net.py and test_net.py (tools/ablate.py passes its own)."""
    args = build_parser().parse_args(argv)
    try:
        grid, out, jobs = prepare(args, tools_dir)
        if args.report_only:
            write_report(grid, out)
            print(f"tables rebuilt in {out}")
            return 0
        total = len(grid.cells())
        print(f"{grid.path}: {total} cells, {total - len(jobs)} finished already, {len(jobs)} to run", flush=True)
        if args.executor != "local":
            return submit_cells(args, grid, out, jobs, lambda: write_report(grid, out))
        outcome = run_cells(
            jobs,
            args.jobs,
            child_env(args.threads),
            lambda line: print(line, flush=True),
            lambda: write_report(grid, out, plot=False),
        )
        return _finish(grid, out, jobs, outcome)
    except OneLineError as e:  # a bad grid, a refused output, no SLURM here
        print(f"{e.prefix}: {e}", file=sys.stderr)
        return 1
