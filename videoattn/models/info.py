"""Model size and cost: parameter count and FLOPs from torch's own flop counter.

FLOPs follow the fvcore / PySlowFast convention (one multiply-add = one FLOP), i.e. half of
what ``torch.utils.flop_counter`` reports; like fvcore's defaults, convolutions, matmuls and
attention are counted, element-wise ops (BN, ReLU, pooling) are not.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one eval-mode forward pass with input ``input_shape`` (B, 3, T, H, W).

    Runs on a copy of the model on the ``meta`` device: shapes only, no arithmetic, so it is
    instant even for R101 at 32 frames.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter:
        meta(torch.zeros(*input_shape, device="meta"))
    return counter.get_total_flops() // 2


def model_summary(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """``{"params": int, "flops": int (multiply-adds), "input_shape": tuple}``."""
    return {"params": count_params(model), "flops": count_flops(model, input_shape), "input_shape": tuple(input_shape)}
