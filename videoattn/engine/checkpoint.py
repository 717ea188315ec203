"""Checkpoint files: PySlowFast-compatible dicts written atomically.

A checkpoint is ``{"model_state": ..., "config": <plain dict>, "meta": {...}, ...}``; training adds
``optimizer_state``, ``scheduler_state``, ``scaler_state``, ``epoch``, ``global_step``, ``rng_state``.
``model_state`` never carries DDP's ``module.`` prefix.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import re
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

import videoattn
from videoattn.models.cbam_form import check_cbam_form
from videoattn.utils.io import atomic_torch_save
from videoattn.utils.outputs import read_manifest
from videoattn.utils.serialization import CheckpointError, UntrustedCheckpointError, load_file
from videoattn.utils.state_dict import check_finite_state, to_cpu, unwrap_state_dict

logger = logging.getLogger(__name__)
HEAD_PREFIX = "head.proj."  # the classifier that fine-tuning re-initialises
__all__ = ["CheckpointError", "UntrustedCheckpointError"]  # re-exported for callers of this module


def make_checkpoint(
    model_state: Dict[str, torch.Tensor], config: Optional[dict] = None, source: str = "videoattn", **extra: Any
) -> dict:
    """Assemble a checkpoint dict (``config`` is a plain dict, e.g. ``config_to_dict(cfg)``); every
    tensor in it is on the CPU."""
    ckpt = {
        "model_state": unwrap_state_dict(model_state),
        "config": config,
        "meta": {
            "videoattn_version": videoattn.__version__,
            "torch_version": str(torch.__version__),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "source": source,
        },
    }
    ckpt.update(extra)
    return to_cpu(ckpt)


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Write ``ckpt`` to ``path`` atomically (temp file, fsync, rename)."""
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str, map_location: str = "cpu", trust: bool = False) -> dict:
    """Read a checkpoint as data only (no code runs; see :mod:`videoattn.utils.serialization`).

    Raises :class:`CheckpointError` naming the file if it is unusable (or its weights hold NaN or
    inf values, naming those tensors), and
    :class:`UntrustedCheckpointError` if it needs full unpickling and ``trust`` is False.
    """
    ckpt = load_file(path, trust=trust, map_location=map_location)
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        raise CheckpointError(f"{path} is not a videoattn/PySlowFast checkpoint (no 'model_state' key)")
    if isinstance(ckpt["model_state"], dict):
        check_finite_state(ckpt["model_state"], path)  # NaN/inf weights: refused, named
    return ckpt


# --- Training checkpoints: naming, resume, retention, best, fine-tuning, RNG state -----------------

CHECKPOINT_DIR = "checkpoints"
TOOL = "train_net"  # output_dir's list of outputs (videoattn/utils/outputs.py) names its checkpoints so
BEST_NAME = "checkpoint_best.pyth"
_EPOCH_RE = re.compile(r"^checkpoint_epoch_(\d{5,})\.pyth$")
_MID_EPOCH_RE = re.compile(r"^checkpoint_epoch_(\d{5,})_iter_(\d{6,})\.pyth$")
Position = Tuple[int, int]  # (epochs completed, batches done in the next epoch): the order of checkpoints


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, CHECKPOINT_DIR)


def checkpoint_name(path: str) -> str:
    """``checkpoints/<file name>``: how output_dir's list of outputs names the checkpoint at ``path``."""
    return os.path.join(CHECKPOINT_DIR, os.path.basename(path))


def epoch_checkpoint_path(output_dir: str, epoch: int) -> str:
    """``output_dir/checkpoints/checkpoint_epoch_00005.pyth`` for 1-based ``epoch`` (PySlowFast)."""
    return os.path.join(checkpoint_dir(output_dir), f"checkpoint_epoch_{epoch:05d}.pyth")


def mid_epoch_checkpoint_path(output_dir: str, epoch: int, iteration: int) -> str:
    """``output_dir/checkpoints/checkpoint_epoch_00005_iter_000120.pyth``: inside 1-based ``epoch``
    (not finished), after its first ``iteration`` batches (a preemption or time-based save)."""
    return os.path.join(checkpoint_dir(output_dir), f"checkpoint_epoch_{epoch:05d}_iter_{iteration:06d}.pyth")


def best_checkpoint_path(output_dir: str) -> str:
    return os.path.join(checkpoint_dir(output_dir), BEST_NAME)


def list_epoch_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """``[(epoch, path), ...]`` of the periodic (end of epoch) checkpoints in ``output_dir``, oldest first."""
    return [(epoch, path) for (epoch, iteration), path in list_checkpoints(output_dir) if iteration == 0]


def list_checkpoints(output_dir: str) -> List[Tuple[Position, str]]:
    """``[((epochs completed, iteration), path), ...]`` of the periodic and mid-epoch checkpoints,
    oldest first: epoch 2's file is ``(2, 0)``, ``..._epoch_00003_iter_000040`` is ``(2, 40)``."""
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        if m := _EPOCH_RE.match(name):
            found.append(((int(m.group(1)), 0), os.path.join(folder, name)))
        elif (m := _MID_EPOCH_RE.match(name)) and int(m.group(1)) >= 1:
            found.append(((int(m.group(1)) - 1, int(m.group(2))), os.path.join(folder, name)))
    return sorted(found)


def is_mid_epoch(path: str) -> bool:
    return _MID_EPOCH_RE.match(os.path.basename(path)) is not None


def find_last_checkpoint(output_dir: str, trust: bool = False) -> Optional[Tuple[str, dict]]:
    """The newest readable periodic or mid-epoch checkpoint as ``(path, ckpt)``, or None.

    Truncated or unreadable files are skipped with a warning naming them. A file that needs full
    unpickling is not skipped: :class:`UntrustedCheckpointError` (nothing here ever writes one,
    so someone else put it there).
    """
    for _, path in reversed(list_checkpoints(output_dir)):
        try:
            return path, load_checkpoint(path, trust=trust)
        except UntrustedCheckpointError:
            raise
        except CheckpointError as e:
            logger.warning("skipping checkpoint %s: %s", path, e)
    return None


def is_complete_checkpoint(path: str) -> bool:
    """Cheap structural check: a whole ``torch.save`` zip archive (a truncated or 0-byte file, or
    random bytes, lacks the zip's central directory). Reads the directory, not the tensors."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def prune_checkpoints(output_dir: str, keep_last: int) -> List[str]:
    """Delete all but the newest ``keep_last`` complete periodic checkpoints (``<= 0`` keeps all),
    and every mid-epoch checkpoint older than the newest complete checkpoint.

    Only complete files (:func:`is_complete_checkpoint`) count and only they are deleted: an
    unreadable file, whatever its epoch number, is neither counted nor removed (a warning names
    it), so the newest valid checkpoint is never deleted. Mid-epoch checkpoints are resume points
    only: the newest complete checkpoint supersedes them (they never count towards ``keep_last``).
    ``checkpoint_best.pyth`` is never touched. Only files that output_dir's list of outputs names
    as train_net's are counted or deleted (a checkpoint copied in by hand is kept). Each deletion is
    logged; returns the removed paths.
    """
    own, complete = read_manifest(output_dir), []
    for position, path in list_checkpoints(output_dir):
        if own.get(checkpoint_name(path)) != TOOL:
            logger.warning("retention: %s was not written by %s; not counted, not deleted", path, TOOL)
        elif is_complete_checkpoint(path):
            complete.append((position, path))
        else:
            logger.warning("retention: %s is not a complete checkpoint; not counted, not deleted", path)
    periodic = [path for _, path in complete if not is_mid_epoch(path)]
    doomed = [(path, f"train.keep_last={keep_last}") for path in (periodic[:-keep_last] if keep_last > 0 else [])]
    doomed += [(path, "superseded mid-epoch checkpoint") for _, path in complete[:-1] if is_mid_epoch(path)]
    removed = []
    for path, why in doomed:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed.append(path)
            logger.info("retention (%s): deleted %s", why, path)
    return removed


def load_pretrained(model: nn.Module, path: str, trust: bool = False) -> Dict[str, List[str]]:
    """Initialise ``model`` from a checkpoint for fine-tuning (weights only).

    Tensors whose shape differs from the model's are an error, except the classifier
    (``head.proj.*``): with a different number of classes the head keeps its fresh
    initialisation and a warning says so. Keys present on one side only are reported. A checkpoint
    of another CBAM form (``model.cbam.variant`` / ``gates`` / ``order``) is refused in one line.
    Returns ``{"reinitialised": [...], "missing": [...], "unexpected": [...]}``.
    """
    ckpt = load_checkpoint(path, trust=trust)
    state = unwrap_state_dict(ckpt["model_state"])
    check_cbam_form(model, ckpt, state, path)  # another CBAM form: one line, never a partial load
    own = model.state_dict()
    reinit, bad = [], []
    for key in list(state):
        if key in own and state[key].shape != own[key].shape:
            (reinit if key.startswith(HEAD_PREFIX) else bad).append(key)
    if bad:
        raise CheckpointError(
            f"{path}: shape mismatch for {len(bad)} tensors, e.g. {bad[0]}: checkpoint "
            f"{tuple(state[bad[0]].shape)} vs model {tuple(own[bad[0]].shape)} "
            f"(is model.* the same architecture?)"
        )
    old_shapes = {key: tuple(state.pop(key).shape) for key in reinit}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in reinit]
    if reinit:
        old = old_shapes[reinit[0]]
        logger.warning(
            "fine-tuning from %s: re-initialising the classifier head (%s) because its shape "
            "%s differs from the model's %s (number of classes changed)",
            path,
            ", ".join(reinit),
            old,
            tuple(own[reinit[0]].shape),
        )
    if missing:
        logger.warning(
            "fine-tuning from %s: %d model tensors not in the checkpoint keep their initialisation: %s",
            path,
            len(missing),
            ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""),
        )
    if result.unexpected_keys:
        logger.warning(
            "fine-tuning from %s: %d checkpoint tensors unused: %s",
            path,
            len(result.unexpected_keys),
            ", ".join(result.unexpected_keys[:8]) + (" ..." if len(result.unexpected_keys) > 8 else ""),
        )
    logger.info("loaded initial weights from %s", path)
    return {"reinitialised": reinit, "missing": missing, "unexpected": list(result.unexpected_keys)}


def get_rng_state() -> dict:
    """This process's python, numpy, torch (and CUDA) generator states, as plain data (tensors,
    numbers, tuples), so the checkpoint loads with ``weights_only=True``."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "kind": kind,
        "key": torch.from_numpy(key.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(gauss),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` captured."""
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        n = (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)  # a tuple in checkpoints of videoattn 0.1.0
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if torch.is_tensor(cuda) and torch.cuda.is_available():  # 0.1.0 stored a list for every visible GPU
        torch.cuda.set_rng_state(cuda)
