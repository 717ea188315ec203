"""Public pretrained weights by name: download once, verify, convert, load.

=====================  ============  =================================  =============  ===========
name                   source        file                               model preset   classes
=====================  ============  =================================  =============  ===========
``i3d_r50``            pytorchvideo  kinetics/I3D_8x8_R50.pyth          ``I3D_R50``    Kinetics-400
``c2d_r50``            pytorchvideo  kinetics/C2D_8x8_R50.pyth          ``C2D_R50``    Kinetics-400
``slow_r50``           pytorchvideo  kinetics/SLOW_8x8_R50.pyth         ``SLOW_R50``   Kinetics-400
``resnet18_imagenet``  torchvision   resnet18-f37072fd.pth (inflated)   any depth 18   ImageNet-1k
``resnet50_imagenet``  torchvision   resnet50-0676ba61.pth (inflated)   any depth 50   ImageNet-1k
=====================  ============  =================================  =============  ===========

URLs are read from the installed libraries (``pytorchvideo.models.hub.resnet.checkpoint_paths``,
``torchvision.models.ResNet*_Weights.IMAGENET1K_V1``), never written down here. Files are cached by
:mod:`videoattn.utils.download` (``$VIDEOATTN_HOME/weights`` or torch hub's dir). torchvision's
file names carry a sha256 prefix, checked on every use. pytorchvideo publishes no checksum: a new
file is verified by converting it into its preset's model (every key and shape must match), and
its sha256 is then recorded beside it and re-checked on later loads. Files are read as data only
(``weights_only``); Kinetics-400 weights bring the Kinetics-400 class names, ImageNet weights
torchvision's ImageNet categories (when the model's head takes them).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from videoattn.models.convert import check_compatible, convert_state_dict, from_pytorchvideo, read_state_dict
from videoattn.models.presets import PRESETS
from videoattn.models.resnet3d import ResNet3D
from videoattn.utils import download
from videoattn.utils.download import DownloadError  # noqa: F401  (raised by fetch_pretrained)
from videoattn.utils.errors import UsageError
from videoattn.utils.resources import kinetics400_classes
from videoattn.utils.serialization import CheckpointError
from videoattn.utils.state_dict import ConversionError

_K400 = {"source": "pytorchvideo", "num_classes": 400, "classes": "kinetics400"}
_IMAGENET = {"source": "torchvision", "num_classes": 1000, "classes": "imagenet1k"}
_ENTRIES: Dict[str, dict] = {  # without their URLs, which pretrained_registry() reads from the libraries
    "i3d_r50": dict(_K400, preset="I3D_R50", depth=50),
    "c2d_r50": dict(_K400, preset="C2D_R50", depth=50),
    "slow_r50": dict(_K400, preset="SLOW_R50", depth=50),
    # 2D ImageNet ResNets, inflated into any 3D model of the same depth and width (64)
    "resnet18_imagenet": dict(_IMAGENET, preset=None, depth=18),
    "resnet50_imagenet": dict(_IMAGENET, preset="I3D_R50", depth=50),
}
PRETRAINED_NAMES: Tuple[str, ...] = tuple(sorted(_ENTRIES))


def _imagenet_weights(depth: int):
    """torchvision's ``ResNet{depth}_Weights.IMAGENET1K_V1`` (its URL and class names)."""
    # imported here: torchvision's import costs ~1 s (torchvision.ops pulls torch._dynamo) in every process
    import torchvision.models

    return {18: torchvision.models.ResNet18_Weights, 50: torchvision.models.ResNet50_Weights}[depth].IMAGENET1K_V1


@functools.lru_cache(maxsize=None)
def pretrained_registry() -> Dict[str, dict]:
    """name -> entry (source, url, preset, depth, num_classes, classes); also :data:`PRETRAINED`.
    Built on first use: reading the URLs imports torchvision and pytorchvideo (~1.2 s)."""
    with warnings.catch_warnings():  # pytorchvideo's import warns about torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from pytorchvideo.models.hub.resnet import checkpoint_paths
    registry = {}
    for name, entry in _ENTRIES.items():
        url = checkpoint_paths[name] if entry["source"] == "pytorchvideo" else _imagenet_weights(entry["depth"]).url
        registry[name] = dict(entry, url=url)
    return registry


def __getattr__(name: str):
    """``PRETRAINED``: :func:`pretrained_registry`, built when first read (PEP 562)."""
    if name == "PRETRAINED":
        return pretrained_registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class PretrainedInfo:
    """What :func:`load_pretrained_weights` loaded: its origin, the cached file, and the class
    names of the model's head (None where the head was left as initialised)."""

    name: str
    source: str
    url: str
    path: str
    sha256: str
    classes: Optional[List[str]]
    notes: List[str] = field(default_factory=list)


def pretrained_entry(name: str, registry: Optional[Dict[str, dict]] = None) -> dict:
    """The registry entry for ``name``; ``ValueError`` (one line, listing the names) if unknown."""
    names = PRETRAINED_NAMES if registry is None else sorted(registry)  # no import for an unknown name
    if name not in names:
        raise UsageError(f"unknown pretrained weights '{name}'; choose one of {', '.join(names)}")
    return (pretrained_registry() if registry is None else registry)[name]


def class_names(entry: dict) -> List[str]:
    """Class names of an entry's head, in output-index order."""
    if entry["classes"] == "kinetics400":
        return kinetics400_classes()
    return list(_imagenet_weights(entry["depth"]).meta["categories"])


def reference_model(entry: dict) -> ResNet3D:
    """The entry's preset model with its head (used to verify a file; ``meta`` device, no memory)."""
    p = PRESETS[entry["preset"]]
    with torch.device("meta"):
        return ResNet3D(
            depth=p["depth"],
            base_channels=p.get("base_channels", 64),
            temporal=p["temporal"],
            num_classes=entry["num_classes"],
            nonlocal_locations=p["non_local"]["locations"],
            cbam_stages=p["cbam"]["stages"],
        )


def layout_hint(name: str, entry: dict) -> str:
    """Which models ``name``'s weights fit, as advice for a config that does not."""
    if entry["preset"] and entry["source"] == "pytorchvideo":
        return (
            f"'{name}' holds {entry['preset']} weights: use model.preset={entry['preset']} "
            f"(non-local / CBAM may be added) with depth, base_channels and temporal unset"
        )
    return (
        f"'{name}' holds 2D ResNet-{entry['depth']} weights: they inflate into a model with "
        f"model.depth={entry['depth']} and model.base_channels=64"
    )


def verify_by_conversion(path: str, entry: dict) -> None:
    """Raise :class:`ConversionError` (a ``ValueError``) unless the pytorchvideo file at ``path``
    converts into the entry's preset model with every key and shape matching (none missing or unknown)."""
    try:
        converted = from_pytorchvideo(read_state_dict(path))
        missing = check_compatible(converted, reference_model(entry), "pytorchvideo")
    except (ConversionError, CheckpointError) as e:
        raise ConversionError(f"it does not convert into {entry['preset']}: {e}") from None
    if missing:
        raise ConversionError(f"it lacks {len(missing)} keys of {entry['preset']}, e.g. {missing[:3]}")


def fetch_pretrained(
    name: str, cache: Optional[str] = None, base_url: Optional[str] = None, registry: Optional[Dict[str, dict]] = None
) -> Tuple[str, str]:
    """``(path, sha256)`` of the verified cached file of ``name`` (downloaded if absent).

    Raises :class:`DownloadError` (one line) when the file cannot be had, fails its checksum,
    changed since it was verified, or (pytorchvideo) does not convert; a bad file is removed.
    """
    entry = pretrained_entry(name, registry)
    verify = (lambda path: verify_by_conversion(path, entry)) if entry["source"] == "pytorchvideo" else None
    return download.fetch(entry["url"], cache=cache, base_url=base_url, verify=verify)


def _pytorchvideo_state(state: dict, model: nn.Module, name: str) -> tuple:
    """Renamed state for ``model``; the head is dropped (and noted) when its class count differs."""
    converted = from_pytorchvideo(state)
    target = model.state_dict()
    head = [k for k in converted if k.startswith("head.")]
    if head and all(k in target for k in head) and any(converted[k].shape != target[k].shape for k in head):
        for k in head:
            converted.pop(k)
    missing = check_compatible(converted, model, f"pretrained '{name}'", allow_missing_head=True)
    return converted, [f"{k}: left as initialised" for k in missing]


def load_pretrained_weights(
    model: nn.Module,
    name: str,
    cache: Optional[str] = None,
    base_url: Optional[str] = None,
    inflation: str = "mean",
    registry: Optional[Dict[str, dict]] = None,
) -> PretrainedInfo:
    """Load the public weights ``name`` (see :data:`PRETRAINED`) into ``model`` in place.

    Kinetics-400 weights need the preset's layout (non-local / CBAM blocks absent from the file
    keep their identity-at-init values); a head of another class count stays as initialised,
    for fine-tuning. ImageNet weights are inflated (``inflation``: "mean" | "centre").

    Args:
        cache: cache folder (default :func:`videoattn.utils.download.cache_dir`).
        base_url: download from ``<base_url>/<file name>`` instead (a mirror; tests).
        registry: name -> entry table (default :data:`PRETRAINED`).
    Raises:
        DownloadError: the file cannot be downloaded or verified (one line).
        ValueError: unknown name, or the weights do not fit ``model`` (one line).
    """
    entry = pretrained_entry(name, registry)
    path, sha256 = fetch_pretrained(name, cache, base_url, registry)
    state = read_state_dict(path)
    try:
        if entry["source"] == "pytorchvideo":
            converted, notes = _pytorchvideo_state(state, model, name)
        else:
            converted, notes = convert_state_dict(entry["source"], state, model, inflation)
    except ConversionError as e:
        raise UsageError(f"{e}; {layout_hint(name, entry)}") from None
    model.load_state_dict(converted, strict=False)
    head_loaded = any(k.startswith("head.") for k in converted)
    return PretrainedInfo(
        name=name,
        source=entry["source"],
        url=entry["url"],
        path=path,
        sha256=sha256,
        classes=class_names(entry) if head_loaded else None,
        notes=notes,
    )
