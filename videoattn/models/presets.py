"""Named model presets, and the resolution of a ``model`` config section into a complete one.

A preset is a plain dict of ``model.*`` keys. The config section leaves every preset-able key
unset (``None``) unless a file or an override sets it; :func:`resolve_model_config` fills each unset
key from ``model.preset``, else from :data:`STANDARD`. So a key set explicitly always wins over the
preset, and the preset over the standard value. Non-local placement follows PySlowFast's
I3D_NLN_8x8_R50 (NL after blocks 1 and 3 of res3 and blocks 1, 3 and 5 of res4).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from typing import Any, Dict

from videoattn.config.schema import ModelConfig
from videoattn.utils.errors import UsageError

# The value of every preset-able key that neither the preset nor the config sets.
STANDARD: Dict[str, Any] = {
    "depth": 50,
    "base_channels": 64,
    "temporal": "i3d",
    "non_local": {
        "locations": [[], [], [], []],
        "instantiation": "embedded_gaussian",
        "subsample": [1, 2, 2],
        "inter_ratio": 0.5,
        "attention": "full",
        "window": [8, 14, 14],
    },
    "cbam": {
        "stages": [],
        "reduction": 16,
        "kernel_size": 7,
        # official for now; the ablation issue (22) decides the standard form by measurement.
        "variant": "official",
        "order": "channel_spatial",
        "gates": "both",
    },
}

_NL_R50 = {"locations": [[], [1, 3], [1, 3, 5], []], "instantiation": "embedded_gaussian", "subsample": [1, 2, 2]}
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
    "I3D_NL_CBAM_R18": {
        "depth": 18,
        "base_channels": 16,
        "temporal": "i3d",
        "non_local": {"locations": [[], [1], [1], []], "instantiation": "embedded_gaussian", "subsample": [1, 2, 2]},
        "cbam": {"stages": [2, 3, 4, 5], "reduction": 4},
    },
    # Its per-frame twin (no temporal kernels, no non-local): the demo's C2D baseline.
    "C2D_R18": {"depth": 18, "base_channels": 16, "temporal": "c2d", "non_local": _NONE_NL, "cbam": _NONE_CBAM},
}


def _fill(section: Any, preset: dict, standard: dict) -> Any:
    """A copy of dataclass ``section`` whose unset (None) fields take the preset's, else the standard value."""
    values = {}
    for f in dataclasses.fields(section):
        if f.name not in standard:
            continue
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            values[f.name] = _fill(value, preset.get(f.name, {}), standard[f.name])
        elif value is None:
            values[f.name] = copy.deepcopy(preset.get(f.name, standard[f.name]))
    return dataclasses.replace(section, **values)


def resolve_model_config(model: ModelConfig) -> ModelConfig:
    """``model`` with every unset key filled (explicit > ``model.preset`` > :data:`STANDARD`).

    Raises ValueError naming the nearest preset for an unknown ``model.preset``.
    """
    if model.preset and model.preset not in PRESETS:
        near = difflib.get_close_matches(model.preset, list(PRESETS), n=1, cutoff=0.3)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise UsageError(f"unknown model.preset '{model.preset}'{hint} (presets: {', '.join(PRESETS)})")
    return _fill(model, PRESETS.get(model.preset, {}), STANDARD)
