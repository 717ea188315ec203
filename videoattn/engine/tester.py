"""Multi-view testing of a checkpoint (what ``tools/test_net.py`` runs), PySlowFast style.

Every video of ``data.test_split`` (falling back to ``data.val_split``) is scored on
``test.num_ensemble_views`` temporal clips x ``test.num_spatial_crops`` crops; views are
aggregated per video by ``test.aggregation``. Works in one process or under torchrun (views are
sharded across processes; rank 0 writes ``output_dir/test/``).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional

from omegaconf import DictConfig, OmegaConf

from videoattn.utils.distributed import barrier, init_distributed, is_main_process
from videoattn.engine.evaluate import score_multiview
from videoattn.engine.inference import build_inference_model, check_num_classes, resolve_checkpoint
from videoattn.engine.report import write_test_report

log = logging.getLogger(__name__)


def resolve_test_split(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose ``data.test_split`` is set (empty -> ``data.val_split``)."""
    cfg = cfg.copy()
    if not cfg.data.test_split:
        OmegaConf.update(cfg, "data.test_split", cfg.data.val_split)
    return cfg


def run_test(cfg: DictConfig, checkpoint_path: Optional[str] = None,
             trust: bool = False) -> Optional[Dict[str, object]]:
    """Test ``checkpoint_path`` (default: :func:`resolve_checkpoint`); return the metrics on rank 0.
    ``trust``: allow a checkpoint that needs full unpickling (``--trust-checkpoint``).

    Writes ``cfg.output_dir/test/{metrics.json, per_class.csv, confusion_matrix.{csv,png},
    predictions.csv[, view_logits.npz]}`` and ``missing_videos`` report of the dataset.
    """
    from videoattn.data import build_dataset, build_loader

    info = init_distributed(cfg.device, timeout_s=60 * float(cfg.dist_timeout_minutes))
    cfg = resolve_test_split(cfg)
    checkpoint = resolve_checkpoint(cfg, checkpoint_path)
    model = build_inference_model(cfg, checkpoint, info.device, trust=trust)  # bad checkpoint: fail before decoding
    dataset = build_dataset(cfg, "test")
    num_classes = int(cfg.model.num_classes)
    check_num_classes(dataset.classes, num_classes, f"the class list of {cfg.data.test_split}")
    loader = build_loader(cfg, "test", dataset)
    class_names = list(dataset.classes) + [f"class_{i}" for i in range(len(dataset.classes), num_classes)]
    result = score_multiview(model, loader, num_videos=len(dataset.videos), num_classes=num_classes,
                             aggregation=cfg.test.aggregation, save_logits=cfg.test.save_logits,
                             device=info.device, num_views=dataset.num_views)
    out_dir = os.path.join(cfg.output_dir, "test")
    metrics = None
    if is_main_process():
        paths = [v[0] for v in dataset.videos]
        missing = list(getattr(dataset, "missing", []))
        extra = {"num_missing": len(missing), "missing": missing, "split": cfg.data.test_split,
                 "checkpoint": checkpoint, "aggregation": cfg.test.aggregation,
                 "num_ensemble_views": int(cfg.test.num_ensemble_views),
                 "num_spatial_crops": int(cfg.test.num_spatial_crops), "world_size": info.world_size}
        metrics = write_test_report(out_dir, result, class_names, paths, extra)
        if hasattr(dataset, "write_missing_report"):
            dataset.write_missing_report(out_dir)
        log.info("test: %d videos (%d unreadable, %d missing) clip top-1 %.4f | video top-1 %.4f top-5 %.4f "
                 "| mean class acc %.4f -> %s", metrics["num_videos"], metrics["num_unreadable"],
                 len(missing), metrics["clip_top1"], metrics["video_top1"], metrics["video_top5"],
                 metrics["mean_class_accuracy"], out_dir)
    barrier()
    return metrics
