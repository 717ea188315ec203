"""Named model presets: plain dicts of ``model.*`` keys (see ``videoattn/config/schema.py``).

``model.preset=NAME`` in a YAML file or on the command line fills these keys; anything the
file or the command line sets explicitly wins. Non-local placement follows PySlowFast's
I3D_NLN_8x8_R50 (NL after blocks 1 and 3 of res3 and blocks 1, 3 and 5 of res4).
"""
from __future__ import annotations

from typing import Dict

_NL_R50 = {"locations": [[], [1, 3], [1, 3, 5], []], "instantiation": "embedded_gaussian",
           "subsample": [1, 2, 2]}
_CBAM_ALL = {"stages": [2, 3, 4, 5]}
_NONE_NL = {"locations": [[], [], [], []]}
_NONE_CBAM: dict = {"stages": []}

PRESETS: Dict[str, dict] = {
    "I3D_R50": {"depth": 50, "temporal": "i3d", "non_local": _NONE_NL, "cbam": _NONE_CBAM},
    "I3D_NL_R50": {"depth": 50, "temporal": "i3d", "non_local": _NL_R50, "cbam": _NONE_CBAM},
    "I3D_CBAM_R50": {"depth": 50, "temporal": "i3d", "non_local": _NONE_NL, "cbam": _CBAM_ALL},
    "I3D_NL_CBAM_R50": {"depth": 50, "temporal": "i3d", "non_local": _NL_R50, "cbam": _CBAM_ALL},
    "C2D_R50": {"depth": 50, "temporal": "c2d", "non_local": _NONE_NL, "cbam": _NONE_CBAM},
    "SLOW_R50": {"depth": 50, "temporal": "slow", "non_local": _NONE_NL, "cbam": _NONE_CBAM},
    # Tiny CPU model for the demo and tests: R18 layout at a quarter of the width.
    "I3D_NL_CBAM_R18": {"depth": 18, "base_channels": 16, "temporal": "i3d",
                        "non_local": {"locations": [[], [1], [1], []], "instantiation": "embedded_gaussian",
                                      "subsample": [1, 2, 2]},
                        "cbam": {"stages": [2, 3, 4, 5], "reduction": 4}},
    # Its per-frame twin (no temporal kernels, no non-local): the demo's C2D baseline.
    "C2D_R18": {"depth": 18, "base_channels": 16, "temporal": "c2d", "non_local": _NONE_NL,
                "cbam": _NONE_CBAM},
}
