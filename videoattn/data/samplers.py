"""Samplers: a training sampler that can start a pass part-way (mid-epoch resume), its
class-balanced variant (``data.balance=sampler``), and disjoint shards for distributed evaluation."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler

from videoattn.data.balance import balanced_order


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` whose next pass can start part-way through an epoch.

    ``set_epoch(epoch, skip=k)``: the next pass yields this rank's share of ``epoch``'s permutation
    (the same one as ever: ``seed + epoch``) without its first ``k`` indices, the ones a run that
    stopped mid-epoch already trained on (``k`` = batches done x per-process batch). Only that pass
    skips; ``len()`` counts it, later passes (precise BN, the next epoch) are whole.
    """

    skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if not 0 <= skip <= self.num_samples:
            raise ValueError(f"cannot skip {skip} of the {self.num_samples} samples of this rank's shard")
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        indices = list(self._shard())
        return iter(indices[skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip

    def _shard(self) -> Iterator[int]:
        """This rank's whole share of the epoch: ``DistributedSampler``'s."""
        return super().__iter__()


class BalancedDistributedSampler(ResumableDistributedSampler):
    """:class:`ResumableDistributedSampler` over an exactly class-balanced epoch
    (:func:`videoattn.data.balance.balanced_order` of ``labels``, one per dataset item, drawn with
    ``seed + epoch`` as the permutation it replaces).

    The epoch keeps the dataset's length N; torch's ``DistributedSampler`` pads and shards its
    positions (``shuffle=False``: ``0..N-1``, padded by repeating the first ones, rank r takes every
    R-th from r), so each rank gets the same share of the same balanced order as it would of a
    permutation, ``set_epoch(epoch, skip=k)`` resumes mid-epoch the same way, and the union of the
    ranks' shares is the balanced epoch plus at most R - 1 padding draws.
    """

    def __init__(self, dataset, labels: Sequence[int], num_replicas: int, rank: int, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        if self.labels.numel() != len(dataset):
            raise ValueError(f"{self.labels.numel()} labels for {len(dataset)} items")

    def _shard(self) -> Iterator[int]:
        order = balanced_order(self.labels, torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        return (order[i] for i in super()._shard())


class ShardSampler(Sampler[int]):
    """Rank ``rank`` of ``world_size`` gets one contiguous, disjoint share of ``range(size)``.

    Unlike ``DistributedSampler`` it never pads with duplicates, so every item is evaluated exactly
    once across ranks (shares differ by at most one item). Contiguous shares keep the views of a
    video together on one rank.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.start = size * rank // world_size
        self.stop = size * (rank + 1) // world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
