"""Files written by multi-view testing under ``output_dir/test/`` (rank 0 only, atomically):

``metrics.json``, ``per_class.csv``, ``confusion_matrix.csv`` / ``.png``, ``predictions.csv``
and, with ``test.save_logits``, ``view_logits.npz``.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np
import torch

from videoattn.evaluation.metrics import confusion_matrix, per_class_accuracy
from videoattn.utils.io import atomic_path, atomic_write_csv, atomic_write_json


def write_per_class(path: str, conf: torch.Tensor, class_names: List[str]) -> None:
    """One row per class: index, name, videos, correct, accuracy (recall), precision."""
    acc = per_class_accuracy(conf)
    predicted = conf.sum(dim=0)
    rows = []
    for c, name in enumerate(class_names):
        support, correct = int(conf[c].sum()), int(conf[c, c])
        prec = correct / int(predicted[c]) if predicted[c] > 0 else float("nan")
        rows.append([c, name, support, correct, f"{acc[c].item():.6f}", f"{prec:.6f}"])
    atomic_write_csv(path, ["class_index", "class_name", "num_videos", "num_correct", "accuracy", "precision"], rows)


def write_confusion(csv_path: str, png_path: str, conf: torch.Tensor, class_names: List[str]) -> None:
    """Counts as CSV (row = true class, column = predicted); row-normalised heat map as PNG."""
    rows = [[name] + conf[i].tolist() for i, name in enumerate(class_names)]
    atomic_write_csv(csv_path, ["true\\predicted"] + list(class_names), rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    norm = conf.double() / conf.sum(dim=1, keepdim=True).clamp(min=1).double()
    side = min(max(4.0, 0.45 * n + 2.5), 24.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=150)
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of the true class")
    if n <= 60:
        ax.set_xticks(range(n), labels=class_names, rotation=60, ha="right", fontsize=max(4, 10 - n // 8))
        ax.set_yticks(range(n), labels=class_names, fontsize=max(4, 10 - n // 8))
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(conf[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(conf.sum())
    ax.set_title(
        f"Video-level confusion matrix\n{total} videos, top-1 {conf.diag().sum().item() / max(total, 1):.1%}",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_predictions(
    path: str,
    paths: List[str],
    scores: torch.Tensor,
    labels: torch.Tensor,
    scored: torch.Tensor,
    class_names: List[str],
    k: int = 5,
    non_finite: Optional[torch.Tensor] = None,
) -> None:
    """Per video: path, label, top-k predicted classes and their aggregated scores, and
    ``non_finite`` (1: a view's logits held NaN or inf); videos not ``scored`` (unreadable, or
    non-finite) are listed with empty predictions."""
    k = min(k, len(class_names))
    header = (
        ["video", "label", "label_name", "correct"]
        + [f"pred{i + 1}" for i in range(k)]
        + [f"score{i + 1}" for i in range(k)]
        + ["non_finite"]
    )
    rows = []
    for v, p in enumerate(paths):
        lab = int(labels[v])
        name = class_names[lab] if 0 <= lab < len(class_names) else ""
        flag = int(non_finite is not None and bool(non_finite[v]))
        if not scored[v]:
            rows.append([p, lab, name, ""] + [""] * (2 * k) + [flag])
            continue
        top = scores[v].topk(k)
        preds = [class_names[i] for i in top.indices.tolist()]
        rows.append(
            [p, lab, name, int(top.indices[0] == lab)] + preds + [f"{s:.6g}" for s in top.values.tolist()] + [flag]
        )
    atomic_write_csv(path, header, rows)


def write_view_logits(path: str, view_logits: np.ndarray, labels: torch.Tensor, paths: List[str]) -> None:
    """``.npz`` with ``logits (N, C)``, ``video_index (N,)``, ``view_index (N,)``, ``label (N,)``, ``paths (V,)``."""
    vidx = view_logits[:, 0].astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            logits=view_logits[:, 2:],
            video_index=vidx,
            view_index=view_logits[:, 1].astype(np.int64),
            label=labels.numpy()[vidx],
            paths=np.asarray(paths),
        )


def test_report_files(save_logits: bool) -> List[str]:
    """The files :func:`write_test_report` writes."""
    names = ["metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv"]
    return names + (["view_logits.npz"] if save_logits else [])


def write_test_report(
    out_dir: str, result, class_names: List[str], paths: List[str], extra: Dict[str, object]
) -> Dict[str, object]:
    """Write every test output under ``out_dir``; return the metrics dict written to metrics.json."""
    os.makedirs(out_dir, exist_ok=True)
    metrics = result.metrics(class_names)
    readable, scored = result.readable, result.scored
    conf = confusion_matrix(
        result.video_scores[scored].argmax(dim=1) if scored.any() else torch.zeros(0),
        result.video_labels[scored],
        len(class_names),
    )
    unreadable = [
        {"path": paths[v], "error": "; ".join(sorted({e for _, e in result.failed_views.get(v, [])}))}
        for v in torch.nonzero(~readable).flatten().tolist()
    ]
    partial = [
        {"path": paths[v], "failed_views": [view for view, _ in fv], "error": fv[0][1]}
        for v, fv in sorted(result.failed_views.items())
        if readable[v]
    ]
    non_finite = [
        {"path": paths[v], "non_finite_views": int(result.non_finite_views[v])}
        for v in torch.nonzero(result.non_finite).flatten().tolist()
    ]
    metrics.update(unreadable=unreadable, partially_readable=partial, non_finite=non_finite, **extra)
    atomic_write_json(os.path.join(out_dir, "metrics.json"), metrics)
    write_per_class(os.path.join(out_dir, "per_class.csv"), conf, class_names)
    write_confusion(
        os.path.join(out_dir, "confusion_matrix.csv"), os.path.join(out_dir, "confusion_matrix.png"), conf, class_names
    )
    write_predictions(
        os.path.join(out_dir, "predictions.csv"),
        paths,
        result.video_scores,
        result.video_labels,
        scored,
        class_names,
        non_finite=result.non_finite,
    )
    if result.view_logits is not None:
        write_view_logits(os.path.join(out_dir, "view_logits.npz"), result.view_logits, result.video_labels, paths)
    return metrics
