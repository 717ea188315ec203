"""Frozen stages for fine-tuning (``train.freeze``): no gradient, and BN statistics kept as loaded.

A frozen stage's parameters get ``requires_grad=False`` (so the optimizer never holds them, see
:func:`videoattn.train.solver.param_groups`, and DDP does not reduce them) and its BatchNorm layers
stay in eval mode: they normalise with their running statistics and never update them. Every
``model.train()`` sets all BN layers back to training mode, so the loop calls :meth:`FrozenPart.bn_eval`
after each one, and precise BN (:func:`videoattn.train.precise_bn.update_bn_stats`) leaves the
layers of :meth:`FrozenPart.bn_layers` alone. Layers are looked up by stage name on each call, so
they are found also after SyncBatchNorm replaced them (``bn.sync``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Sequence

from torch import nn

from videoattn.utils.errors import UsageError

logger = logging.getLogger(__name__)


@dataclass
class FrozenPart:
    """The stages frozen in a model, and how much of it they hold."""

    stages: List[str]  # in the order train.freeze names them
    frozen_params: int  # parameter elements with requires_grad off
    total_params: int

    def bn_layers(self, model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
        """The BN layers inside the frozen stages of ``model`` (the plain module)."""
        return [m for stage in self.stages for m in _stage(model, stage).modules() if isinstance(m, _BN)]

    def bn_eval(self, model: nn.Module) -> None:
        """Put the frozen stages' BN layers (back) into eval mode; call after every ``model.train()``."""
        for m in self.bn_layers(model):
            m.eval()

    def line(self) -> str:
        """The start-up log line."""
        if not self.stages:
            return "frozen stages: none (train.freeze is empty)"
        share = 100.0 * self.frozen_params / max(self.total_params, 1)
        return (
            f"frozen stages: {', '.join(self.stages)} (no gradient, BN in eval mode with its loaded "
            f"statistics): {self.frozen_params:,} of {self.total_params:,} parameters ({share:.1f}%)"
        )


_BN = nn.modules.batchnorm._BatchNorm


def _stage(model: nn.Module, name: str) -> nn.Module:
    module = getattr(model, name, None)
    if not isinstance(module, nn.Module):
        raise UsageError(f"train.freeze names '{name}', which this model does not have")
    return module


def freeze_stages(model: nn.Module, stages: Sequence[str]) -> FrozenPart:
    """Switch the gradients of ``stages`` (names of ``model``'s children, e.g. ``stem``, ``res2``)
    off and their BN layers to eval mode, and log :meth:`FrozenPart.line` (if any); returns what was
    frozen. Call before building the optimizer."""
    names = list(dict.fromkeys(stages))  # each once, in the given order
    frozen = 0
    for name in names:
        for p in _stage(model, name).parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    part = FrozenPart(names, frozen, sum(p.numel() for p in model.parameters()))
    part.bn_eval(model)
    if names:
        logger.info(part.line())
    return part
