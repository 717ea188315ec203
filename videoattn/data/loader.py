"""DataLoader construction: per-process batch, samplers, workers, collate with the skipped list."""
from __future__ import annotations

import random
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from videoattn.config import DataConfig
from videoattn.data.dataset import VideoClipDataset
from videoattn.data.samplers import BalancedDistributedSampler, ResumableDistributedSampler, ShardSampler
from videoattn.utils.distributed import get_rank, get_world_size, per_process_batch
from videoattn.utils.malloc import tune_malloc
from videoattn.utils.preemption import ignore_signals
from videoattn.utils.errors import UsageError


def collate(items: List[dict]) -> dict:
    """Batch item dicts; ``skipped`` lists are concatenated into ``batch["skipped"]: [(path, reason)]``.

    Items of N clips each (``data.clips_per_video`` > 1: clip (N, 3, T, S, S)) give a batch of
    B*N clips (:func:`flatten_clips`): the model sees clips, whichever video they come from.
    """
    skipped = [s for item in items for s in item.get("skipped", ())]
    batch = default_collate([{k: v for k, v in item.items() if k != "skipped"} for item in items])
    if batch["clip"].dim() == 6:
        batch = flatten_clips(batch, batch["clip"].shape[1])
    batch["skipped"] = skipped
    return batch


def flatten_clips(batch: dict, n: int) -> dict:
    """B videos of ``n`` clips -> B*n clips, video-major (clip ``b * n + k`` is clip k of video b):
    clip (B, n, 3, T, S, S) -> (B*n, 3, T, S, S), frame_indices (B, n, T) -> (B*n, T); per-video
    values (label (B,), video_index, ..., error list) repeated for each of their clips -> (B*n,)."""
    out = {}
    for key, value in batch.items():
        if key in ("clip", "frame_indices"):
            out[key] = value.flatten(0, 1)
        elif torch.is_tensor(value):
            out[key] = value.repeat_interleave(n, dim=0)
        else:
            out[key] = [v for v in value for _ in range(n)]
    return out


def videos_per_batch(global_batch: int, clips_per_video: int, world_size: Optional[int] = None) -> int:
    """Training videos each process loads per step: ``train.batch_size`` (the global number of
    clips per optimizer step) / processes / ``data.clips_per_video``; a one-line UsageError naming
    both values unless they divide.

    So LR scaling, BatchNorm and memory per step do not depend on ``clips_per_video``; an epoch
    (one pass over the videos) has ``clips_per_video`` times the steps. (PySlowFast's
    ``AUG.NUM_SAMPLE`` instead keeps the videos per GPU and multiplies the clips per step.)
    """
    per_process = per_process_batch(global_batch, "train.batch_size", world_size)
    if per_process % clips_per_video:
        world = global_batch // per_process
        good = max(1, global_batch // (world * clips_per_video)) * world * clips_per_video
        raise UsageError(f"data.clips_per_video={clips_per_video} must divide the clips per process, train.batch_size="
                         f"{global_batch} / {world} process(es) = {per_process} (each process loads whole videos); "
                         f"e.g. train.batch_size={good}")
    return per_process // clips_per_video


def init_worker(worker_id: int) -> None:
    """Worker start-up: keep freed clip buffers in the heap (:func:`tune_malloc`), seed numpy and
    random from torch's per-worker seed (torch seeds itself per worker), and ignore SLURM's
    preemption signals (SIGUSR1/SIGTERM reach every process of a job step: the main process alone
    decides when to stop, see :mod:`videoattn.utils.preemption`)."""
    tune_malloc()
    ignore_signals()
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def unique_broken(skipped: Iterable[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """``[(path, reason)]`` with each path once (its first reason), in first-seen order: a broken
    file hit again by a retry's random substitute is still one broken file."""
    first: Dict[str, str] = {}
    for path, reason in skipped:
        first.setdefault(path, reason)
    return list(first.items())


class VideoLoader(DataLoader):
    """A DataLoader that keeps, per pass (epoch), the broken videos its batches skipped.

    ``broken`` is ``{path: reason}`` of the current (or last) pass, each broken file once however
    often retries hit it; ``position`` counts the batches yielded in the pass under way (0 between
    passes). Training names and counts broken files once per file per epoch in its epoch summary
    (all processes together, on rank 0).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.broken: Dict[str, str] = {}
        self.position = 0

    def __iter__(self):
        self.broken, self.position = {}, 0
        for batch in super().__iter__():
            for path, reason in batch.get("skipped", ()):
                self.broken.setdefault(path, reason)
            self.position += 1
            yield batch
        self.position = 0


def build_loader(dataset: VideoClipDataset, data: DataConfig, batch_size: int, seed: int = 0,
                 device: torch.device = torch.device("cpu")) -> VideoLoader:
    """DataLoader over ``dataset`` with ``batch_size`` items per process (see
    :func:`videoattn.utils.distributed.per_process_batch`). Items are videos: with
    ``data.clips_per_video`` = N (train) a batch holds ``batch_size * N`` clips, ``len(loader)``
    and ``loader.batch_size`` count videos (train: :func:`videos_per_batch`).

    train: :class:`ResumableDistributedSampler` (``DistributedSampler(shuffle=True, seed=seed)``; call
    ``loader.sampler.set_epoch(e)``), :class:`BalancedDistributedSampler` with ``data.balance=sampler``,
    drop_last when the shard holds at least one batch. val/test: :class:`ShardSampler` (disjoint,
    no padding). Workers: ``data.num_workers`` (persistent, ``data.prefetch_factor``), pinned memory
    if ``data.pin_memory`` and ``device`` is CUDA.
    """
    rank, world = get_rank(), get_world_size()
    if dataset.split == "train":
        if data.balance == "sampler":
            labels = [label for _, label in dataset.videos]  # one item per training video
            sampler = BalancedDistributedSampler(dataset, labels, num_replicas=world, rank=rank, seed=seed)
        else:
            sampler = ResumableDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        drop_last = len(sampler) >= batch_size
    else:
        sampler = ShardSampler(len(dataset), rank, world)
        drop_last = False
    workers = data.num_workers
    generator = torch.Generator().manual_seed(seed * 1000 + rank)
    kwargs = dict(persistent_workers=True, prefetch_factor=data.prefetch_factor) if workers > 0 else {}
    return VideoLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                       pin_memory=data.pin_memory and device.type == "cuda", drop_last=drop_last,
                       worker_init_fn=init_worker, generator=generator, **kwargs)
