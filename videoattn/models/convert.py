"""Convert pytorchvideo and PySlowFast ResNet state dicts to :class:`ResNet3D` key names.

Both share the layout of :class:`ResNet3D` (same convs, same order), so conversion is a pure
renaming; shapes are then checked against the target model, which catches a config that does
not match the checkpoint (depth, width, temporal pattern, non-local placement).

pytorchvideo (``create_resnet``, e.g. hub ``i3d_r50`` / ``slow_r50``)::

    blocks.0.conv / blocks.0.norm                       -> stem.conv / stem.bn
    blocks.<k>.res_blocks.<j>.branch1_conv / _norm      -> res<s>.<j>.downsample.0 / .1
    blocks.<k>.res_blocks.<j>.branch2.conv_a / norm_a   -> res<s>.<j>.conv1 / bn1   (b -> 2, c -> 3)
    blocks.<last>.proj                                  -> head.proj
  (``<k>`` counts the temporal pool as a block, so stages are numbered by order of appearance.)

PySlowFast (``ResNet`` in video_model_builder.py, single pathway)::

    s1.pathway0_stem.conv / .bn                         -> stem.conv / stem.bn
    s<s>.pathway0_res<j>.branch1 / branch1_bn           -> res<s>.<j>.downsample.0 / .1
    s<s>.pathway0_res<j>.branch2.a / a_bn               -> res<s>.<j>.conv1 / bn1   (b -> 2, c -> 3)
    s<s>.pathway0_nonlocal<j>.conv_theta/phi/g/out, bn  -> res<s>.<j>.nl.theta/phi/g/out, bn
    head.projection                                     -> head.proj
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from videoattn.models.inflate import inflate_state_dict
from videoattn.utils.serialization import CheckpointError, UntrustedCheckpointError, load_file
from videoattn.utils.state_dict import ConversionError, check_finite_state, unwrap_state_dict

SOURCES = ("torchvision", "pytorchvideo", "pyslowfast")
_PTV_BRANCH = {
    "branch1_conv": "downsample.0",
    "branch1_norm": "downsample.1",
    "branch2.conv_a": "conv1",
    "branch2.norm_a": "bn1",
    "branch2.conv_b": "conv2",
    "branch2.norm_b": "bn2",
    "branch2.conv_c": "conv3",
    "branch2.norm_c": "bn3",
}
_PSF_BRANCH = {
    "branch1": "downsample.0",
    "branch1_bn": "downsample.1",
    "branch2.a": "conv1",
    "branch2.a_bn": "bn1",
    "branch2.b": "conv2",
    "branch2.b_bn": "bn2",
    "branch2.c": "conv3",
    "branch2.c_bn": "bn3",
}
_PSF_NL = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out", "bn": "bn", "norm": "bn"}


Rule = Tuple[str, Callable[["re.Match"], str]]  # (key pattern, new name from the match)


def rename_keys(
    state: Dict[str, torch.Tensor], rules: Sequence[Rule], source: str, unknown: str = ""
) -> Dict[str, torch.Tensor]:
    """``state`` with every key renamed by the first rule whose pattern matches it; a key no rule
    matches is a :class:`ConversionError` naming it (``unknown`` is appended to the message)."""
    out = {}
    for key, value in unwrap_state_dict(state).items():
        for pattern, name in rules:
            if m := re.match(pattern, key):
                out[name(m)] = value
                break
        else:
            raise ConversionError(f"{source} key {key} has no counterpart{unknown}")
    return out


def sub_module(table: Dict[str, str], rest: str, source: str, key: str) -> str:
    """``'branch2.conv_a.weight'`` -> ``'conv1.weight'`` through ``table`` (module names)."""
    module, _, param = rest.rpartition(".")
    if module not in table:
        raise ConversionError(f"{source} key {key}: unknown sub-module '{module}'")
    return f"{table[module]}.{param}"


def from_pytorchvideo(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a pytorchvideo ``create_resnet`` state dict (hub i3d_r50, slow_r50, c2d_r50, ...)."""
    state = unwrap_state_dict(state)
    stage_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.res_blocks\.", k))})
    stage_of = {k: f"res{i + 2}" for i, k in enumerate(stage_ids)}
    return rename_keys(
        state,
        [
            (r"^blocks\.0\.(conv|norm)\.(.+)$", lambda m: f"stem.{'conv' if m[1] == 'conv' else 'bn'}.{m[2]}"),
            (
                r"^blocks\.(\d+)\.res_blocks\.(\d+)\.(.+)$",
                lambda m: f"{stage_of[int(m[1])]}.{m[2]}.{sub_module(_PTV_BRANCH, m[3], 'pytorchvideo', m[0])}",
            ),
            (r"^blocks\.\d+\.proj\.(.+)$", lambda m: f"head.proj.{m[1]}"),
        ],
        "pytorchvideo",
        " (only single-pathway create_resnet models convert)",
    )


def from_pyslowfast(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a PySlowFast single-pathway ResNet ``model_state`` (C2D / I3D / Slow, with or without NL)."""
    two = next((k for k in state if "pathway1" in k), None)
    if two:
        raise ConversionError(f"PySlowFast key {two}: two-pathway (SlowFast) checkpoints are not supported")
    return rename_keys(
        state,
        [
            (r"^s1\.pathway0_stem\.(conv|bn)\.(.+)$", lambda m: f"stem.{m[1]}.{m[2]}"),
            (
                r"^s(\d)\.pathway0_res(\d+)\.(.+)$",
                lambda m: f"res{m[1]}.{m[2]}.{sub_module(_PSF_BRANCH, m[3], 'PySlowFast', m[0])}",
            ),
            (
                r"^s(\d)\.pathway0_nonlocal(\d+)\.(.+)$",
                lambda m: f"res{m[1]}.{m[2]}.nl.{sub_module(_PSF_NL, m[3], 'PySlowFast', m[0])}",
            ),
            (r"^head\.projection\.(.+)$", lambda m: f"head.proj.{m[1]}"),
        ],
        "PySlowFast",
        " in this model",
    )


def check_compatible(
    state: Dict[str, torch.Tensor], model: nn.Module, source: str, allow_missing_head: bool = False
) -> List[str]:
    """Raise :class:`ConversionError` naming mismatched/unknown keys; return the model keys left as initialised."""
    target = model.state_dict()
    unknown = [k for k in state if k not in target]
    shape = [
        f"{k}: {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if unknown or shape:
        raise ConversionError(
            f"{source} weights do not fit this model (check depth, base_channels, temporal, "
            f"non_local.locations, num_classes): unknown keys {unknown[:5]}, shape mismatches {shape[:5]}"
        )
    missing = [k for k in target if k not in state]
    # Non-local and CBAM blocks absent from the source keep their init; the non-local block is
    # then the identity (zero BN weight), so the converted network computes the source's function.
    allowed = [k for k in missing if ".cbam." in k or ".nl." in k or (allow_missing_head and k.startswith("head."))]
    hard = [k for k in missing if k not in allowed]
    if hard:
        raise ConversionError(f"{source} weights lack {len(hard)} keys of this model, e.g. {hard[:5]}")
    return missing


def convert_state_dict(
    source: str, state: Dict[str, torch.Tensor], model: nn.Module, inflation: str = "mean"
) -> tuple[Dict[str, torch.Tensor], List[str]]:
    """Convert ``state`` from ``source`` (one of :data:`SOURCES`) for ``model``.

    Returns ``(state_for_model, notes)``; ``notes`` lists keys left as initialised (CBAM, a
    head of another class count) so the caller can report them. Load with ``strict=False``.
    """
    if source == "torchvision":
        converted, notes = inflate_state_dict(state, model, inflation)
        missing = check_compatible(converted, model, source, allow_missing_head=True)
        return converted, notes + [f"{k}: left as initialised" for k in missing]
    if source == "pytorchvideo":
        converted = from_pytorchvideo(state)
    elif source == "pyslowfast":
        converted = from_pyslowfast(state)
    else:
        raise ConversionError(f"unknown source '{source}'; choose one of {', '.join(SOURCES)}")
    missing = check_compatible(converted, model, source)
    return converted, [f"{k}: left as initialised" for k in missing]


def read_state_dict(path: str, trust: bool = False) -> Dict[str, torch.Tensor]:
    """Load the weights in ``path``: a plain state dict, or a checkpoint dict holding
    ``model_state`` (PySlowFast / pytorchvideo / this project), ``state_dict`` or ``model``.

    Weights holding NaN or inf values are refused (:class:`CheckpointError` naming the tensors).
    Read as data only; a whole pickled module (or anything else that needs full unpickling) loads
    only with ``trust=True`` (:mod:`videoattn.utils.serialization`).
    """
    try:
        obj = load_file(path, trust=trust)
    except UntrustedCheckpointError:
        raise
    except CheckpointError as e:
        raise ConversionError(f"{e}; Caffe2 .pkl checkpoints must be converted with PySlowFast first") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConversionError(f"{path} holds no state dict (expected tensors, or a dict with 'model_state')")
    check_finite_state(obj, path)  # NaN/inf weights: refused, named
    return obj


def convert_file(source: str, path: str, model: nn.Module, inflation: str = "mean", trust: bool = False) -> List[str]:
    """Load ``path`` (from ``source``) into ``model`` in place; return notes on keys left as initialised."""
    state, notes = convert_state_dict(source, read_state_dict(path, trust), model, inflation)
    model.load_state_dict(state, strict=False)
    return notes
