"""Peers' training loaders for ``tools/benchmark.py data``, each run from the peer's installed code
with the Kinetics recipe (T frames x rate at 30 fps, short side jittered in [min, max], square crop,
flip), one process, batches of ``batch_size``:

* pytorchvideo: ``pytorchvideo.data.Kinetics`` (``decoder="decord"``, ``decode_audio=False``, a
  random clip of ``T * rate / fps`` seconds per video) with its own train transform
  ``pytorchvideo.transforms.create_video_transform(mode="train")`` (uniform temporal subsample,
  normalise, random short side scale, random crop, flip). Its decord decoder returns the clip's
  frames as float 0..255, so the mean/std are given x255 (the same arithmetic as /255 first).
  ``threads=1`` patches its decoder's ``num_threads=0`` (decord's automatic threads) to one, the
  setting that costs least per core; both variants are measured.
* mmaction2: ``mmaction.datasets.VideoDataset`` with the decord pipeline ``DecordInit`` ->
  ``SampleFrames(T, rate, 1)`` -> ``DecordDecode`` -> ``RandomRescale(jitter)`` ->
  ``RandomCrop(crop)`` -> ``Flip(0.5)`` -> ``FormatShape(NCTHW)`` -> ``PackActionInputs``, collated
  by mmengine's ``pseudo_collate`` (uint8 out: mmaction2 normalises on the device).

pytorchvideo 0.1.5 imports ``torchvision.transforms.functional_tensor``, which torchvision renamed
``_functional_tensor``; :func:`pytorchvideo_compat` aliases the old name before importing it.
"""

from __future__ import annotations

import random
import sys
from typing import Iterator, List, Tuple

import numpy as np


def pytorchvideo_compat() -> None:
    """Let pytorchvideo 0.1.5 import under the installed torchvision (an alias, no code change)."""
    import torchvision.transforms._functional_tensor as functional_tensor

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional_tensor)


def available() -> dict:
    """{peer: "" if importable, else why not}."""
    status = {}
    try:
        pytorchvideo_compat()
        import pytorchvideo.data  # noqa: F401
        import pytorchvideo.transforms  # noqa: F401

        status["pytorchvideo"] = ""
    except Exception as e:  # an old or broken install: reported in the table
        status["pytorchvideo"] = f"{type(e).__name__}: {e}"
    try:
        import mmaction.datasets  # noqa: F401

        status["mmaction2"] = ""
    except Exception as e:
        status["mmaction2"] = f"{type(e).__name__}: {e}"
    return status


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pytorchvideo_batches(list_file: str, recipe, batch_size: int, seed: int, threads: int = 0) -> Iterator[int]:
    """Clips per batch of pytorchvideo's Kinetics loader over ``list_file`` (``<path> <label>``), forever.
    ``threads``: its decord decoder's num_threads (0 = its default)."""
    pytorchvideo_compat()
    import pytorchvideo.data.encoded_video as encoded_video
    import torch
    from pytorchvideo.data import Kinetics, make_clip_sampler
    from pytorchvideo.data.encoded_video_decord import EncodedVideoDecord
    from pytorchvideo.transforms import create_video_transform

    class Decoder(EncodedVideoDecord):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("num_threads", threads)
            super().__init__(*args, **kwargs)

    encoded_video.select_video_class = lambda decoder: Decoder  # the decord class, num_threads set
    _seed(seed)
    transform = create_video_transform(
        mode="train",
        video_key="video",
        remove_key=["audio"],
        num_samples=recipe.num_frames,
        convert_to_float=False,
        video_mean=tuple(m * 255 for m in recipe.mean),
        video_std=tuple(s * 255 for s in recipe.std),
        min_size=recipe.jitter[0],
        max_size=recipe.jitter[1],
        crop_size=recipe.crop,
        horizontal_flip_prob=0.5,
    )
    duration = recipe.num_frames * recipe.sampling_rate / recipe.target_fps
    dataset = Kinetics(
        list_file, make_clip_sampler("random", duration), decode_audio=False, decoder="decord", transform=transform
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0)
    while True:
        for batch in loader:
            yield int(batch["video"].shape[0])


def mmaction_batches(list_file: str, recipe, batch_size: int, seed: int) -> Iterator[int]:
    """Clips per batch of mmaction2's VideoDataset with its decord pipeline, shuffled, forever."""
    import torch
    from mmaction.datasets import VideoDataset
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    if DefaultScope.get_current_instance() is None:
        DefaultScope.get_instance("videoattn_benchmark", scope_name="mmaction")
    _seed(seed)
    pipeline = [
        dict(type="DecordInit", num_threads=1),
        dict(type="SampleFrames", clip_len=recipe.num_frames, frame_interval=recipe.sampling_rate, num_clips=1),
        dict(type="DecordDecode"),
        dict(type="RandomRescale", scale_range=tuple(recipe.jitter)),
        dict(type="RandomCrop", size=recipe.crop),
        dict(type="Flip", flip_ratio=0.5),
        dict(type="FormatShape", input_format="NCTHW"),
        dict(type="PackActionInputs"),
    ]
    dataset = VideoDataset(ann_file=list_file, pipeline=pipeline)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        collate_fn=pseudo_collate,
        generator=torch.Generator().manual_seed(seed),
    )
    while True:
        for batch in loader:
            yield len(batch["inputs"])


def pyslowfast_decoder_clips(clips: List[Tuple[str, np.ndarray]]) -> Iterator[int]:
    """PySlowFast's default PyAV decoder on ``clips`` ((path, frame indices)), one clip per step, forever
    (decoding only: its transforms are not run, which flatters it)."""
    from benchmarks.pyslowfast_decoder import pyslowfast_pyav_clip

    while True:
        for path, idx in clips:
            pyslowfast_pyav_clip(path, idx)
            yield 1
