"""Choices that depend on the run's device, made once at start-up.

* :func:`expand_preset`: the config with the model preset expanded, as every tool loads it and
  every run uses it (the one place a config's preset is resolved; ``build_model`` also resolves
  the ``model`` section it is given, for library callers).
* :func:`for_device`: the config as a run uses it: the model preset expanded, and the ``auto``
  (null) keys resolved for the device: CUDA gets uint8
  batches normalised on the GPU (``data.normalize_on_device``) and bf16 autocast
  (``train.mixed_precision`` / ``test.mixed_precision``); the CPU gets channels_last_3d weights and
  inputs (``model.channels_last``; measured faster there, see docs/benchmarks.md, model).
* :func:`configure_backends`: cuDNN autotuning and TF32 matmuls on CUDA.
* :func:`autocast_dtype`: a ``mixed_precision`` value -> the autocast dtype (None: off).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from videoattn.config import Config
from videoattn.models.presets import resolve_model_config
from videoattn.utils.errors import UsageError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _pick(value: Optional[bool], default: bool) -> bool:
    return default if value is None else value


def expand_preset(cfg: Config) -> Config:
    """A copy of ``cfg`` whose ``model`` section has every unset key filled (explicit > ``model.preset``
    > standard); a ValueError names the nearest preset for an unknown ``model.preset``."""
    return dataclasses.replace(cfg, model=resolve_model_config(cfg.model))


def for_device(cfg: Config, device: torch.device) -> Config:
    """A copy of ``cfg`` with the model preset expanded and the device-dependent unset keys set for
    ``device`` (what a run saves in config.yaml and its checkpoints)."""
    cuda = device.type == "cuda"
    auto_amp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "none"

    def amp(mode: str) -> str:
        return auto_amp if mode == "auto" else mode

    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, normalize_on_device=_pick(cfg.data.normalize_on_device, cuda)),
        model=dataclasses.replace(expand_preset(cfg).model, channels_last=_pick(cfg.model.channels_last, not cuda)),
        train=dataclasses.replace(cfg.train, mixed_precision=amp(cfg.train.mixed_precision)),
        test=dataclasses.replace(cfg.test, mixed_precision=amp(cfg.test.mixed_precision)),
    )


def autocast_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """``none`` | ``bf16`` | ``fp16`` -> the autocast dtype; fp16 needs CUDA."""
    if device.type == "cpu" and mode == "fp16":
        raise UsageError("mixed_precision=fp16 needs CUDA; on CPU use bf16 or none")
    return AMP_DTYPES[mode]


def configure_backends(device: torch.device) -> None:
    """On CUDA: let cuDNN pick the fastest convolution algorithms for the (fixed) clip shape, and
    allow TF32 in float32 matmuls and convolutions (Ampere and newer)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
