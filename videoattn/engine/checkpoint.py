"""Checkpoint files: PySlowFast-compatible dicts written atomically.

A checkpoint is ``{"model_state": ..., "config": <plain dict>, "meta": {...}, ...}``; training adds
``optimizer_state``, ``scheduler_state``, ``scaler_state``, ``epoch``, ``global_step``, ``rng_state``.
``model_state`` never carries DDP's ``module.`` prefix.
"""
from __future__ import annotations

import datetime
from typing import Any, Dict, Optional

import torch

import videoattn
from videoattn.utils.io import atomic_torch_save


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a checkpoint."""


def unwrap_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip DDP's ``module.`` prefix (and torch.compile's ``_orig_mod.``) from every key."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def make_checkpoint(model_state: Dict[str, torch.Tensor], config: Optional[dict] = None,
                    source: str = "videoattn", **extra: Any) -> dict:
    """Assemble a checkpoint dict (``config`` is a plain dict, e.g. ``config_to_dict(cfg)``)."""
    ckpt = {
        "model_state": unwrap_state_dict(model_state),
        "config": config,
        "meta": {"videoattn_version": videoattn.__version__, "torch_version": torch.__version__,
                 "created": datetime.datetime.now(datetime.timezone.utc).isoformat(), "source": source},
    }
    ckpt.update(extra)
    return ckpt


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Write ``ckpt`` to ``path`` atomically (temp file, fsync, rename)."""
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str, map_location: str = "cpu") -> dict:
    """Read a checkpoint; raise :class:`CheckpointError` naming the file if it is unusable."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as e:  # truncated zip, pickle garbage, ...
        raise CheckpointError(f"unreadable checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        raise CheckpointError(f"{path} is not a videoattn/PySlowFast checkpoint (no 'model_state' key)")
    return ckpt
