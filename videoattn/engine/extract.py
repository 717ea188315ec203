"""Sliding-window feature extraction (what ``tools/extract_features.py`` runs).

Each video is cut into windows of ``data.num_frames x data.sampling_rate`` frames counted at
``data.target_fps`` (PySlowFast's clip), every ``features.stride_seconds`` (or
``features.stride_frames`` at target fps; default: one window length). Each window goes through
the test-time transform (``features.num_spatial_crops`` crops, optionally averaged) and
``model.extract(x, features.layer)``. Per video (``<id>`` = file stem, made unique)::

    DIR/<id>.npy    (num_windows, D) or (num_windows, crops, D) without crop averaging
    DIR/<id>.json   path, fps, duration, window starts/ends in seconds, frame indices, layer, dtype
    DIR/index.csv   one row per finished video (rank 0, after all ranks finished)
    DIR/failed.csv  videos that could not be decoded this run, with the reason

Files are written atomically, the ``.json`` before the ``.npy``: a video is done iff its ``.npy``
exists, so a killed run leaves no partial file and a re-run does only what is missing.
Under torchrun the videos are sharded across ranks; the files equal a single-process run.
"""
from __future__ import annotations

import sys
import glob
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from videoattn.data.annotations import VIDEO_EXTENSIONS
from videoattn.engine.distributed import all_gather_object, barrier, get_rank, get_world_size, is_main_process
from videoattn.engine.report import csv_text
from videoattn.engine.windows import Window, WindowStream
from videoattn.utils.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

FAULT_ENV = "VIDEOATTN_FAULT_KILL_AFTER"   # test hook: SIGKILL this process while writing video N+1
INDEX_COLUMNS = ["video", "path", "num_windows", "fps", "duration_s", "window_s", "stride_s", "feature_shape",
                 "dtype", "layer", "features", "windows"]


def video_ids(paths: Sequence[str]) -> List[str]:
    """File stems, unique: stems that collide are replaced by the path below the common folder
    with separators turned into ``__``."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    common = os.path.commonpath([os.path.abspath(p) for p in paths]) if len(paths) > 1 else ""
    out = []
    for p, s in zip(paths, stems):
        if stems.count(s) == 1:
            out.append(s)
        else:
            rel = os.path.splitext(os.path.relpath(os.path.abspath(p), common))[0]
            out.append(rel.replace(os.sep, "__"))
    return out


def list_inputs(cfg: DictConfig, source: str) -> Tuple[List[str], List[str]]:
    """``(video paths, missing paths)`` from a video file, a folder (recursive) or a list file.

    A list file is either one video path per line, or anything the dataset reads for a split
    (Kinetics CSV, PySlowFast list), resolved against ``data.root`` as in training.
    """
    if os.path.isdir(source):
        found = [p for p in glob.glob(os.path.join(source, "**", "*"), recursive=True)
                 if p.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(p)]
        return sorted(found), []
    if source.lower().endswith(VIDEO_EXTENSIONS):
        return ([source], []) if os.path.isfile(source) else ([], [source])
    if not os.path.isfile(source):
        raise FileNotFoundError(f"--input {source}: no such video, folder or list file")
    with open(source, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    if lines and all(ln.lower().endswith(VIDEO_EXTENSIONS) for ln in lines):
        base = os.path.dirname(os.path.abspath(source))
        paths = [ln if os.path.isabs(ln) or os.path.exists(ln) else os.path.join(base, ln) for ln in lines]
        return [p for p in paths if os.path.isfile(p)], [p for p in paths if not os.path.isfile(p)]
    from videoattn.data import read_annotations

    d = cfg.data
    ann = read_annotations(d.root, os.path.abspath(source), d.train_split, d.classes_file, "test")
    return [v[0] for v in ann.videos], list(ann.missing)


def _done(out_dir: str, vid: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, vid + ".npy")) and os.path.isfile(os.path.join(out_dir, vid + ".json"))


def _remove_stale_temps(out_dir: str, vid: str) -> None:
    """Temp files a killed run left behind (``atomic_path`` names them ``.<name>.*.tmp``)."""
    for name in (vid + ".npy", vid + ".json"):
        for tmp in glob.glob(os.path.join(glob.escape(out_dir), "." + glob.escape(name) + ".*.tmp")):
            os.remove(tmp)


def _maybe_die(count: int) -> None:
    limit = os.environ.get(FAULT_ENV)
    if limit is not None and count > int(limit):
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def _save_video(out_dir: str, vid: str, path: str, win: Window, feats: np.ndarray, cfg: DictConfig,
                count: int) -> dict:
    meta = {"video": vid, "path": path, "fps": win.fps, "num_video_frames": win.num_frames,
            "duration_s": win.num_frames / win.fps, "window_s": win.window_s, "stride_s": win.stride_s,
            "num_windows": len(win.starts), "starts_s": win.starts, "ends_s": win.ends,
            "frame_indices": win.indices, "layer": cfg.features.layer, "dtype": cfg.features.dtype,
            "feature_shape": list(feats.shape)}
    atomic_write_text(os.path.join(out_dir, vid + ".json"), json.dumps(meta) + "\n")
    with atomic_path(os.path.join(out_dir, vid + ".npy")) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, feats)
        _maybe_die(count)          # fault hook: dies with the temp file written, before the rename
    return meta


def _index_row(meta: dict) -> list:
    return [meta["video"], meta["path"], meta["num_windows"], f"{meta['fps']:.6g}", f"{meta['duration_s']:.6f}",
            f"{meta['window_s']:.6f}", f"{meta['stride_s']:.6f}", "x".join(map(str, meta["feature_shape"])),
            meta["dtype"], meta["layer"], meta["video"] + ".npy", meta["video"] + ".json"]


@torch.inference_mode()
def _features(model: torch.nn.Module, item: dict, cfg: DictConfig, device: torch.device) -> torch.Tensor:
    """``(w, crops, D)`` float32 features of one chunk of windows."""
    feats = model.extract(item["clips"].to(device, non_blocking=True), cfg.features.layer).float().cpu()
    return feats.reshape(item["num_windows"], -1, feats.shape[-1])


def _finish(chunks: List[torch.Tensor], cfg: DictConfig) -> np.ndarray:
    feats = torch.cat(chunks)                                        # (W, crops, D)
    if cfg.features.average_crops:
        feats = feats.mean(dim=1)
    return feats.numpy().astype(np.float16 if cfg.features.dtype == "float16" else np.float32)


def window_loader(videos: Sequence[Tuple[int, str]], cfg: DictConfig) -> DataLoader:
    """Chunks of decoded windows (:class:`WindowStream`), decoded by ``data.num_workers`` workers."""
    workers = min(int(cfg.data.num_workers), len(videos))
    extra = dict(prefetch_factor=int(cfg.data.prefetch_factor)) if workers > 0 else {}
    return DataLoader(WindowStream(videos, cfg), batch_size=None, num_workers=workers, **extra)


def extract_features(cfg: DictConfig, source: str, out_dir: str, checkpoint_path: Optional[str] = None,
                     random_init: bool = False, trust: bool = False) -> Optional[Dict[str, object]]:
    """Extract features of every video of ``source`` into ``out_dir``; summary on rank 0, else None.

    Weights: see :func:`videoattn.engine.inference.resolve_checkpoint` (``random_init``: none, benchmarks
    only; ``trust``: allow a checkpoint that needs full unpickling, ``--trust-checkpoint``).
    """
    from videoattn.engine.distributed import init_distributed
    from videoattn.engine.inference import build_inference_model

    if cfg.features.dtype not in ("float32", "float16"):
        raise ValueError(f"features.dtype must be float32 or float16, got '{cfg.features.dtype}'")
    info = init_distributed(cfg.device, timeout_s=60 * float(cfg.dist_timeout_minutes))
    model = build_inference_model(cfg, checkpoint_path, info.device, random_init, trust)  # bad checkpoint: fail first
    paths, missing = list_inputs(cfg, source)
    ids = video_ids(paths)
    os.makedirs(out_dir, exist_ok=True)
    rank, world = get_rank(), get_world_size()
    todo, skipped = [], 0
    for k in range(rank, len(paths), world):              # this rank's shard
        _remove_stale_temps(out_dir, ids[k])
        if _done(out_dir, ids[k]):
            skipped += 1
        else:
            todo.append((k, paths[k]))
    failed: Dict[int, str] = {}
    pending: Dict[int, List[torch.Tensor]] = {}
    written = 0
    bar = tqdm(total=len(todo), desc="features", unit="video", dynamic_ncols=True,
               disable=not (is_main_process() and sys.stderr.isatty()))
    for item in (window_loader(todo, cfg) if todo else []):
        k = item["k"]
        if "error" in item:
            log.warning("features: skipping %s: %s", paths[k], item["error"])
            failed[k] = item["error"]
            pending.pop(k, None)
            bar.update(1)
            continue
        pending.setdefault(k, []).append(_features(model, item, cfg, info.device))
        if item["chunk"] == item["num_chunks"] - 1:
            written += 1
            _save_video(out_dir, ids[k], paths[k], item["window"], _finish(pending.pop(k), cfg), cfg, written)
            bar.update(1)
    bar.close()
    gathered = all_gather_object((sorted(failed.items()), written, skipped))
    summary = None
    if is_main_process():
        all_failed = sorted(f for g in gathered for f in g[0])
        failed_set = {k for k, _ in all_failed}
        rows = []
        for k, vid in enumerate(ids):
            if k not in failed_set and _done(out_dir, vid):
                with open(os.path.join(out_dir, vid + ".json"), encoding="utf-8") as f:
                    rows.append(_index_row(json.load(f)))
        atomic_write_text(os.path.join(out_dir, "index.csv"), csv_text(INDEX_COLUMNS, rows))
        fail_rows = [[ids[k], paths[k], reason] for k, reason in all_failed] + \
                    [["", m, "missing: file not found"] for m in missing]
        atomic_write_text(os.path.join(out_dir, "failed.csv"), csv_text(["video", "path", "reason"], fail_rows))
        summary = {"num_videos": len(paths), "num_done": len(rows), "num_written": sum(g[1] for g in gathered),
                   "num_skipped_done": sum(g[2] for g in gathered), "num_failed": len(fail_rows),
                   "failed": fail_rows, "output": out_dir}
        log.info("features: %d/%d videos done (%d written now, %d already there), %d failed -> %s",
                 len(rows), len(paths), summary["num_written"], summary["num_skipped_done"], len(fail_rows), out_dir)
    barrier()
    return summary
