"""Samplers: a training sampler that can start a pass part-way (mid-epoch resume), and disjoint
shards for distributed evaluation."""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import DistributedSampler, Sampler


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
        indices = list(super().__iter__())
        return iter(indices[skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


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
