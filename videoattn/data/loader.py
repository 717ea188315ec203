"""DataLoader construction: per-process batch, samplers, workers, collate with the skipped list."""
from __future__ import annotations

import random
from typing import Dict, Iterable, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from videoattn.config import DataConfig
from videoattn.data.dataset import VideoClipDataset
from videoattn.data.samplers import ResumableDistributedSampler, ShardSampler
from videoattn.utils.distributed import get_rank, get_world_size
from videoattn.utils.malloc import tune_malloc
from videoattn.utils.preemption import ignore_signals


def collate(items: List[dict]) -> dict:
    """Batch item dicts; ``skipped`` lists are concatenated into ``batch["skipped"]: [(path, reason)]``."""
    skipped = [s for item in items for s in item.get("skipped", ())]
    batch = default_collate([{k: v for k, v in item.items() if k != "skipped"} for item in items])
    batch["skipped"] = skipped
    return batch


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
    :func:`videoattn.utils.distributed.per_process_batch`).

    train: :class:`ResumableDistributedSampler` (``DistributedSampler(shuffle=True, seed=seed)``; call
    ``loader.sampler.set_epoch(e)``),
    drop_last when the shard holds at least one batch. val/test: :class:`ShardSampler` (disjoint,
    no padding). Workers: ``data.num_workers`` (persistent, ``data.prefetch_factor``), pinned memory
    if ``data.pin_memory`` and ``device`` is CUDA.
    """
    rank, world = get_rank(), get_world_size()
    if dataset.split == "train":
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
