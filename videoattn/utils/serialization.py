"""Reading ``torch.save`` files that someone else may have written, without running their code.

A pickle can call any Python function while it is read, so a checkpoint downloaded or handed over
by someone else must be read with ``torch.load(weights_only=True)``: tensors, numbers, strings and
plain containers only. This project's own checkpoints, PySlowFast's, pytorchvideo's and
torchvision's weight files all load that way. The only allowlisted extras are what checkpoints written by
videoattn 0.1.0 need (a numpy RNG state, a ``TorchVersion`` string).

A file that needs full unpickling (a whole pickled ``nn.Module``, unknown classes) is refused with
:class:`UntrustedCheckpointError`, naming the globals it would import and the explicit opt-in
(``--trust-checkpoint``) that loads it anyway.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any, List

import numpy as np
import torch

from videoattn.utils.errors import OneLineError

TRUST_OPT_IN = "--trust-checkpoint"
_np_core = getattr(np, "_core", None) or np.core  # numpy 2.x | 1.x
# Checkpoints of videoattn 0.1.0 hold np.random.get_state() (a uint32 ndarray unpickles through
# these four) and torch.__version__ (a str subclass); nothing else is allowed.
SAFE_GLOBALS = [
    _np_core.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
    torch.torch_version.TorchVersion,
]


class CheckpointError(OneLineError):
    """A checkpoint or weights file is missing, unreadable, unsafe or not what was expected."""

    prefix = "checkpoint error"


class UntrustedCheckpointError(CheckpointError):
    """The file can only be read by full unpickling, which may run code; it was not loaded."""


# How the weights-only unpickler names what it refused: a global not on the allowlist, a global of a
# blocked module (torch >= 2.6 words ``os.system`` as "GLOBAL posix.system whose module posix is
# blocked"), or a class it will not build.
_REFUSED = re.compile(
    r"GLOBAL ([\w.]+) was not an allowed global|GLOBAL ([\w.]+) whose module [\w.]+ is blocked"
    r"|but got <class '([\w.]+)'>"
)
# Globals of these packages are classes and functions of libraries, not what a payload calls (os,
# posix, builtins, subprocess, ...); the refusal names the others first.
_LIBRARY_PREFIXES = ("torch.", "numpy.", "videoattn.", "collections.")
_SHOWN = 4


def _refused_globals(path: str, error: Exception) -> List[str]:
    """The globals that full unpickling of ``path`` would import; [] if ``error`` is plain corruption."""
    named = [a or b or c for a, b, c in _REFUSED.findall(str(error))]
    if not named:  # "Unsupported operand", ...: random bytes, not a pickle that asks for code
        return []
    try:  # zip files list every global they reference
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) format
        return named
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    return [g for g in found if g not in allowed] or named


def _telling_first(names: List[str]) -> str:
    """The first few of ``names``, in an order that does not depend on hashing: the globals outside
    the known libraries (``posix.system``, ``builtins.open``) first, then alphabetically."""
    order = sorted(set(names), key=lambda n: (n.startswith(_LIBRARY_PREFIXES), n))
    more = len(order) - _SHOWN
    return ", ".join(order[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def load_file(path: str, trust: bool = False, map_location: str = "cpu") -> Any:
    """``torch.load(path)`` restricted to data (``weights_only=True``) unless ``trust``.

    Raises:
        CheckpointError: the file is missing or unreadable (truncated, not a torch file).
        UntrustedCheckpointError: the file needs full unpickling and ``trust`` is False.
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise CheckpointError(f"unreadable checkpoint {path}: empty file")
    try:
        if trust:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as e:
        names = _refused_globals(path, e)
        if not names:
            raise CheckpointError(f"unreadable checkpoint {path}: not a torch file, or corrupt") from None
        raise UntrustedCheckpointError(
            f"refusing to load {path}: it can only be read by full unpickling, which can run arbitrary code "
            f"(it would import {_telling_first(names)}); if you trust its source, pass {TRUST_OPT_IN}"
        ) from None
    except Exception as e:  # truncated zip, random bytes, ...
        raise CheckpointError(f"unreadable checkpoint {path}: {type(e).__name__}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:160] if lines else ""
