"""PySlowFast parameter names for a videoattn state dict: the inverse of
``videoattn.models.convert.from_pyslowfast``, used by tests to write PySlowFast-style checkpoints."""

from typing import Dict

import torch

from videoattn.models.convert import _PSF_BRANCH, _PSF_NL, rename_keys, sub_module

_INV_BRANCH = {v: k for k, v in _PSF_BRANCH.items()}
_INV_NL = {v: k for k, v in _PSF_NL.items() if k != "norm"}


def to_pyslowfast(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """videoattn names -> PySlowFast names; no CBAM keys allowed (CBAM is not part of PySlowFast)."""
    return rename_keys(
        state,
        [
            (r"^stem\.(conv|bn)\.(.+)$", lambda m: f"s1.pathway0_stem.{m[1]}.{m[2]}"),
            (
                r"^res(\d)\.(\d+)\.nl\.(.+)$",
                lambda m: f"s{m[1]}.pathway0_nonlocal{m[2]}.{sub_module(_INV_NL, m[3], 'videoattn', m[0])}",
            ),
            (
                r"^res(\d)\.(\d+)\.(.+)$",
                lambda m: f"s{m[1]}.pathway0_res{m[2]}.{sub_module(_INV_BRANCH, m[3], 'videoattn', m[0])}",
            ),
            (r"^head\.proj\.(.+)$", lambda m: f"head.projection.{m[1]}"),
        ],
        "videoattn",
        " in PySlowFast",
    )
