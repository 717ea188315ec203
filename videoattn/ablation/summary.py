"""summary.md and summary.png from results.csv's rows (finished cells only; see report.py)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import List, Optional

from videoattn.ablation.cells import log_tail
from videoattn.ablation.grid import Grid
from videoattn.ablation.report import DONE_STATUS, CellResult
from videoattn.ablation.stats import Paired, Summary, paired_difference, summarize
from videoattn.utils.io import atomic_path, atomic_write_text

SUMMARY, PLOT = "summary.md", "summary.png"
# (results.csv column, title): the accuracies summary.md compares; the first one is also plotted
METRICS = (
    ("test_video_top1", "Test video top-1"),
    ("test_clip_top1", "Test clip top-1"),
    ("test_mean_class_acc", "Test mean class accuracy"),
    ("best_val_top1", "Best val top-1"),
)
NO_CELL = "no finished cell"


@dataclass(frozen=True)
class VariantStats:
    variant: str
    summary: Summary  # of the metric over the variant's finished seeds
    paired: Optional[Paired]  # minus the baseline, over the seeds both finished; None for the baseline


def variant_stats(grid: Grid, rows: List[CellResult], metric: str) -> List[VariantStats]:
    """Per variant (grid order): the metric's :class:`Summary` and paired difference from the baseline."""
    values = {v.name: {} for v in grid.variants}  # type: ignore[var-annotated]
    for r in rows:
        if r.status == DONE_STATUS and r.variant in values:
            values[r.variant][r.seed] = getattr(r, metric)
    base = values[grid.baseline]
    return [
        VariantStats(
            name, summarize(by_seed.values()), None if name == grid.baseline else paired_difference(by_seed, base)
        )
        for name, by_seed in values.items()
    ]


def _pct(x: Optional[float], sign: bool = False) -> str:
    return "–" if x is None else f"{100 * x:{'+' if sign else ''}.2f}"


def _interval(s: Summary, sign: bool = False) -> str:
    if s.n == 0:
        return NO_CELL
    if s.low is None:
        return f"n={s.n}, no interval"
    return f"[{_pct(s.low, sign)}, {_pct(s.high, sign)}]"


def metric_table(grid: Grid, rows: List[CellResult], metric: str, title: str) -> List[str]:
    lines = [
        f"## {title} (%)",
        "",
        f"| variant | n | mean | std | 95% interval | Δ vs {grid.baseline} (n) | 95% interval of Δ | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for v in variant_stats(grid, rows, metric):
        s = v.summary
        if v.paired is None:
            delta = ["baseline", "", ""]
        else:
            d = v.paired.diff
            delta = [f"{_pct(d.mean, True)} ({d.n})", _interval(d, True), v.paired.verdict if d.n else NO_CELL]
        lines.append("| " + " | ".join([v.variant, str(s.n), _pct(s.mean), _pct(s.std), _interval(s), *delta]) + " |")
    return lines + [""]


def comparison_table(grid: Grid, rows: List[CellResult]) -> List[str]:
    """The grid's ``comparisons``: ``left - right`` seed by seed over the seeds both finished, per metric."""
    if not grid.comparisons:
        return []
    lines = [
        "## Comparisons (paired, points)",
        "",
        "| comparison | metric | n | mean Δ | 95% interval of Δ | verdict |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for c in grid.comparisons:
        for metric, title in METRICS[:2]:
            values = {v: {r.seed: getattr(r, metric) for r in rows if r.status == DONE_STATUS and r.variant == v}
                      for v in (c.left, c.right)}  # fmt: skip
            d = paired_difference(values[c.left], values[c.right])
            verdict = d.verdict if d.diff.n else NO_CELL
            lines.append(f"| {c.name} | {title} | {d.diff.n} | {_pct(d.diff.mean, True)} | "
                         f"{_interval(d.diff, True)} | {verdict} |")  # fmt: skip
    return lines + [""]


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _fmt(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def cost_table(grid: Grid, rows: List[CellResult]) -> List[str]:
    lines = [
        "## Cost (finished cells)",
        "",
        "| variant | params | GFLOPs | train s (mean) | train CPU s (mean) | train clips/s (mean) | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in grid.variants:
        mine = [r for r in rows if r.variant == v.name]
        done = [r for r in mine if r.status == DONE_STATUS]
        rss = [r.peak_rss_mib for r in done if r.peak_rss_mib is not None]
        cells = [
            _fmt(mine[0].params if mine else None, ","),
            _fmt(mine[0].gflops if mine else None, ".3f"),
            _fmt(_mean(r.train_s for r in done), ".1f"),
            _fmt(_mean(r.train_cpu_s for r in done), ".1f"),
            _fmt(_mean(r.clips_per_s for r in done), ".1f"),
            _fmt(max(rss) if rss else None, ".0f"),
        ]
        lines.append("| " + " | ".join([v.name, *cells]) + " |")
    return lines + [""]


def unfinished(rows: List[CellResult], out: str) -> List[str]:
    lines = []
    for r in rows:
        if r.status != DONE_STATUS:
            lines.append(f"- `{r.variant}/seed{r.seed}`: {r.status}" + (f": {r.error}" if r.error else ""))
            if r.status == "failed":
                tail = log_tail(os.path.join(out, r.variant, f"seed{r.seed}"))
                lines += ["", "  ```", *(f"  {t}" for t in tail), "  ```", ""]
    return ["## Cells not finished", "", *lines, ""] if lines else []


def write_summary(grid: Grid, rows: List[CellResult], out: str) -> None:
    done = sum(r.status == DONE_STATUS for r in rows)
    head = [
        "# Ablation summary",
        "",
        f"Grid `{grid.path}`, base config `{grid.base_config}`, {grid.nproc} process(es) per cell; "
        f"{done} of {len(rows)} cells finished. Baseline: **{grid.baseline}**.",
        "",
        "Over the finished cells of each variant: mean, sample std and the 95% Student-t interval of the mean; "
        "Δ: the variant minus the baseline seed by seed over the seeds both finished (paired), with its 95% "
        "t-interval and where that interval lies. Rows: results.csv. "
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by tools/ablate.py.",
        "",
    ]
    body = [line for metric, title in METRICS for line in metric_table(grid, rows, metric, title)]
    text = "\n".join(head + body + comparison_table(grid, rows) + cost_table(grid, rows) + unfinished(rows, out))
    atomic_write_text(os.path.join(out, SUMMARY), text.rstrip("\n") + "\n")


def write_plot(grid: Grid, rows: List[CellResult], out: str) -> None:
    """summary.png: test video top-1 per variant and its paired Δ from the baseline, 95% intervals as
    error bars (none where n < 2: such a bar is labelled with its n)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = variant_stats(grid, rows, METRICS[0][0])
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(stats) + 3), 4), squeeze=False)
    panels = [
        (axes[0][0], [s.summary for s in stats], f"{METRICS[0][1]} (%)"),
        (axes[0][1], [s.paired.diff if s.paired else Summary(0, None, None, None, None) for s in stats],
         f"Δ vs {grid.baseline} (paired, points)"),
    ]  # fmt: skip
    for ax, sums, label in panels:
        means = [100 * s.mean if s.mean is not None else 0.0 for s in sums]
        ax.bar(range(len(stats)), means, color="#4c72b0")
        for i, s in enumerate(sums):
            if s.low is not None and s.high is not None:
                ax.errorbar(i, means[i], yerr=[[means[i] - 100 * s.low], [100 * s.high - means[i]]], color="black",
                            capsize=4)  # fmt: skip
            else:
                text = "baseline" if ax is panels[1][0] and stats[i].paired is None else f"n={s.n}"
                ax.annotate(text, (i, means[i]), ha="center", va="bottom", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(list(range(len(stats))), [s.variant for s in stats], rotation=30, ha="right")
        ax.set_ylabel(label)
    fig.suptitle("95% t-intervals over seeds")
    fig.tight_layout()
    with atomic_path(os.path.join(out, PLOT)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
