"""Multi-view testing of a checkpoint (what ``tools/test_net.py`` runs).

Every video of ``data.test_split`` (falling back to ``data.val_split``) is scored on
``test.num_ensemble_views`` temporal clips x ``test.num_spatial_crops`` crops, sampled, cropped and
numbered as ``data.protocol``'s reference does (:mod:`videoattn.data.protocols`; PySlowFast's by
default); views are aggregated per video by ``test.aggregation``. Works in one process or under torchrun (views are
sharded across processes; rank 0 writes ``output_dir/test/``).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Dict, Optional

from videoattn.config import Config
from videoattn.data import VideoClipDataset, build_dataset, build_loader
from videoattn.data.dataset import missing_report_name
from videoattn.engine.inference import check_num_classes
from videoattn.engine.session import RunSession, open_session
from videoattn.evaluation.evaluate import MultiViewResult, score_multiview
from videoattn.evaluation.metrics import NonFiniteError
from videoattn.evaluation.report import test_report_files, write_test_report
from videoattn.utils.distributed import barrier, is_main_process, main_process_claim, per_process_batch

log = logging.getLogger(__name__)
SUMMARY = ("clip_top1", "video_top1", "video_top5", "balanced_accuracy", "macro_f1")  # the summary line's numbers


def score_test_views(
    session: RunSession, model, dataset: VideoClipDataset, save_logits: bool = False
) -> MultiViewResult:
    """Score every view of ``dataset`` (a test dataset with ``test.num_ensemble_views`` x
    ``test.num_spatial_crops`` views per video) in batches of ``test.batch_size`` on the session's
    device and aggregate them per video by ``test.aggregation`` (what ``test_net`` and ``predict``
    report)."""
    cfg, device = session.cfg, session.device
    t = cfg.test
    loader = build_loader(dataset, cfg.data, per_process_batch(t.batch_size, "test.batch_size"), cfg.seed, device)
    return score_multiview(
        model,
        loader,
        len(dataset.videos),
        cfg.model.num_classes,
        session.normalize,
        aggregation=t.aggregation,
        save_logits=save_logits,
        device=device,
        num_views=dataset.num_views,
        amp=session.amp,
    )


def run_test(
    cfg: Config, checkpoint_path: Optional[str] = None, trust: bool = False, pretrained: str = ""
) -> Optional[Dict[str, object]]:
    """Test ``checkpoint_path`` (or the public weights ``pretrained``; default: see
    :func:`videoattn.engine.inference.resolve_weights`); return the metrics on rank 0.
    ``trust``: allow a checkpoint that needs full unpickling (``--trust-checkpoint``).

    Writes ``cfg.output_dir/test/{metrics.json, per_class.csv, confusion_matrix.{csv,png},
    predictions.csv[, view_logits.npz]}`` and the dataset's ``missing_videos`` report; a file of these
    names that test_net did not write is never replaced (:mod:`videoattn.utils.outputs`).
    """
    session = open_session(cfg)  # the process group, the device decisions (test.mixed_precision)
    cfg, info = session.cfg, session.info
    split = cfg.data.test_split or cfg.data.val_split
    model, weights = session.load_model(
        checkpoint_path, trust=trust, pretrained=pretrained
    )  # bad checkpoint: fail before decoding
    out_dir = os.path.join(cfg.output_dir, "test")
    t = cfg.test
    main_process_claim(
        out_dir,
        "test_net",
        test_report_files(t.save_logits) + [missing_report_name("test")],
        hint="use another output_dir",
    )
    dataset = build_dataset(cfg.data, "test", t.num_ensemble_views, t.num_spatial_crops, report_dir=out_dir)
    num_classes = cfg.model.num_classes
    check_num_classes(dataset.classes, num_classes, f"the class list of {split}")
    class_names = list(dataset.classes) + [f"class_{i}" for i in range(len(dataset.classes), num_classes)]
    result = score_test_views(session, model, dataset, save_logits=t.save_logits)
    metrics = None
    if is_main_process():
        paths = [v[0] for v in dataset.videos]
        extra = {
            "num_missing": len(dataset.missing),
            "missing": list(dataset.missing),
            "split": split,
            "checkpoint": weights.source,
            "aggregation": t.aggregation,
            "num_ensemble_views": t.num_ensemble_views,
            "num_spatial_crops": t.num_spatial_crops,
            "world_size": info.world_size,
        }
        metrics = write_test_report(out_dir, result, class_names, paths, extra)
        log.info(
            "test: %d videos (%d unreadable, %d missing, %d non-finite) clip top-1 %s | video top-1 %s "
            "top-5 %s | mean class acc (balanced acc) %s | macro-F1 %s -> %s",
            metrics["num_videos"],
            metrics["num_unreadable"],
            len(dataset.missing),
            metrics["num_non_finite"],
            *(_fraction(metrics[k]) for k in SUMMARY),
            out_dir,
        )
    barrier()
    _raise_if_non_finite(result, out_dir)
    return metrics


def _fraction(value: float) -> str:
    """``0.1234``, or ``n/a`` where no video gave the number (NaN: never printed as one)."""
    return f"{value:.4f}" if math.isfinite(value) else "n/a"


def _raise_if_non_finite(result: MultiViewResult, out_dir: str) -> None:
    """:class:`NonFiniteError` (every rank: the result is gathered) if any logits were NaN or inf."""
    bad = int(result.non_finite.sum())
    if bad:
        raise NonFiniteError(
            f"{bad} of {int(result.readable.sum())} readable videos had NaN or inf logits "
            f"({int(result.non_finite_views.sum())} views): marked non_finite in "
            f"{os.path.join(out_dir, 'predictions.csv')} and metrics.json, left out of the accuracy"
        )
