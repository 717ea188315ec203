"""The one place that strips the prefixes DDP (``module.``) and ``torch.compile`` (``_orig_mod.``)
put in front of parameter and module names."""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from videoattn.utils.errors import OneLineError
from videoattn.utils.serialization import CheckpointError

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class ConversionError(OneLineError, ValueError):
    """Weights that do not convert into this model (a key without counterpart, a missing or
    mis-shaped tensor, a file without a state dict): the tools print one line; any other exception
    raised while converting is a bug and keeps its traceback."""

    prefix = "conversion failed"


def strip_wrapper_prefixes(name: str) -> str:
    """``module._orig_mod.res2.0.conv1.weight`` -> ``res2.0.conv1.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def unwrap_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with every key's wrapper prefixes stripped."""
    return {strip_wrapper_prefixes(k): v for k, v in state.items()}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (in dicts, lists, tuples) moved to the CPU, so that a checkpoint
    written on a GPU loads anywhere without ``map_location``."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj


def non_finite_tensors(state: Dict[str, Any]) -> List[str]:
    """The sorted names of the floating-point tensors in ``state`` that hold a NaN or an infinity."""
    return sorted(
        k
        for k, v in state.items()
        if torch.is_tensor(v) and (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())
    )


def check_finite_state(state: Dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` naming the tensors of ``state`` (weights read from ``source``)
    that hold NaN or infinite values: whatever such a model computes is not a result."""
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise CheckpointError(
            f"{source}: {len(bad)} of {len(state)} weight tensors hold NaN or inf values "
            f"({shown}); refusing to use them"
        )
