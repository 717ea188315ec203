"""Samplers for distributed evaluation."""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import Sampler


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
