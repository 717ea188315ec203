"""Precise BatchNorm statistics (PySlowFast ``BN.USE_PRECISE_STATS``).

The running mean/variance that momentum updates leave behind lag behind the weights; before
evaluation they are recomputed as plain averages over ``num_batches`` training batches with the
weights frozen, then pooled across processes so that every rank holds the same statistics.
"""

from __future__ import annotations

import itertools
import logging
from typing import Iterable, List, Sequence

import torch
from torch import nn

from videoattn.data.transforms import DeviceNormalizer
from videoattn.utils.distributed import all_reduce_, get_world_size

logger = logging.getLogger(__name__)


def bn_layers(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    loader: Iterable,
    num_batches: int,
    device: torch.device,
    normalize: DeviceNormalizer,
    autocast_dtype: torch.dtype | None = None,
    frozen: Sequence[nn.modules.batchnorm._BatchNorm] = (),
) -> int:
    """Recompute every BN layer's running statistics over up to ``num_batches`` batches.

    ``model`` must be the plain module (not the DDP wrapper, whose buffer broadcast would
    overwrite the per-rank statistics). Batches are dicts with ``clip: (B, 3, T, H, W)``.
    A loader shorter than ``num_batches`` is used in full. Statistics are then pooled over
    ranks: mean = average of the rank means, variance = average variance plus the variance of
    the rank means (the ranks see equally many batches, up to one). Returns the batches used.
    The ``frozen`` layers (``train.freeze``) stay in eval mode throughout, before and after (they
    normalise with their own statistics, which stay untouched).
    """
    keep = {id(m) for m in frozen}
    layers = [m for m in bn_layers(model) if id(m) not in keep]
    if not layers or num_batches <= 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight for every batch
    model.train()
    _eval(frozen)
    used = 0
    for batch in itertools.islice(loader, num_batches):
        clip = normalize(batch["clip"], device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            model(clip)
        used += 1
    for m, momentum, (mean, var) in zip(layers, momenta, saved):
        m.momentum = momentum
        if used == 0:  # nothing seen here: keep the old statistics
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    if get_world_size() > 1:
        _pool_over_ranks(layers)
    model.train(was_training)
    _eval(frozen)  # train() above put them back into training mode
    if used < num_batches:
        logger.info("precise BN: the loader has only %d batches (asked for %d); used all of them", used, num_batches)
    return used


def _eval(layers: Sequence[nn.Module]) -> None:
    for m in layers:
        m.eval()


def _pool_over_ranks(layers: List[nn.modules.batchnorm._BatchNorm]) -> None:
    """Every rank's statistics -> their pooled values (mean of means; mean variance plus the
    variance of the means), in one all-reduce on the layers' device."""
    means = torch.cat([m.running_mean for m in layers])
    stats = torch.cat([means, means * means, torch.cat([m.running_var for m in layers])]).double()
    all_reduce_(stats)
    stats /= get_world_size()
    mean, mean_sq, var = stats.chunk(3)
    var = var + (mean_sq - mean * mean).clamp_min(0)
    offset = 0
    for m in layers:
        n = m.running_mean.numel()
        m.running_mean.copy_(mean[offset : offset + n])
        m.running_var.copy_(var[offset : offset + n])
        offset += n
