"""PySlowFast parameter names for a videoattn state dict: the inverse of
``videoattn.models.convert.from_pyslowfast``, used by tests to write PySlowFast-style checkpoints."""
import re
from typing import Dict

import torch

from videoattn.models.convert import _PSF_BRANCH, _PSF_NL, _split_param
from videoattn.utils.state_dict import unwrap_state_dict


def to_pyslowfast(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`from_pyslowfast` ; no CBAM keys allowed."""
    inv_branch = {v: k for k, v in _PSF_BRANCH.items()}
    inv_nl = {v: k for k, v in _PSF_NL.items() if k != "norm"}
    out = {}
    for key, value in unwrap_state_dict(state).items():
        if m := re.match(r"^stem\.(conv|bn)\.(.+)$", key):
            out[f"s1.pathway0_stem.{m.group(1)}.{m.group(2)}"] = value
        elif m := re.match(r"^res(\d)\.(\d+)\.nl\.(\w+)\.(.+)$", key):
            out[f"s{m.group(1)}.pathway0_nonlocal{m.group(2)}.{inv_nl[m.group(3)]}.{m.group(4)}"] = value
        elif m := re.match(r"^res(\d)\.(\d+)\.(.+)$", key):
            module, param = _split_param(m.group(3))
            if module not in inv_branch:
                raise KeyError(f"{key} has no PySlowFast counterpart (CBAM is not part of PySlowFast)")
            out[f"s{m.group(1)}.pathway0_res{m.group(2)}.{inv_branch[module]}.{param}"] = value
        elif m := re.match(r"^head\.proj\.(.+)$", key):
            out[f"head.projection.{m.group(1)}"] = value
        else:
            raise KeyError(f"{key} has no PySlowFast counterpart")
    return out
