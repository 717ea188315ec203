"""The run session: what every entry point (train, test, extract, predict, visualize) sets up
before its work, made once and kept in one typed object.

* the process: :func:`open_session` joins the process group (:func:`init_distributed`, a no-op
  when a tool's :func:`distributed_run` made it), :func:`one_process_session` is one process;
  :func:`locked_session` (training) also logs to the console, makes the group, locks and claims
  the output folder and logs to its ``train.log``, and undoes all that when it closes;
* the device decisions (:meth:`RunSession.for_process`): the config as the run uses it
  (:func:`for_device`: the model preset expanded, the ``auto`` keys set for the device), the
  backends (:func:`configure_backends`), the input normaliser and the autocast dtype;
* the model with its weights (:meth:`RunSession.load_model`).

The training part of a session (metrics writer, interrupts, the run's position, periodic and
mid-epoch checkpoints) is :class:`videoattn.train.session.TrainSession`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Tuple

import torch

from videoattn.config import Config
from videoattn.data.transforms import DeviceNormalizer
from videoattn.engine.device import autocast_dtype, configure_backends, for_device
from videoattn.engine.inference import LoadedWeights, load_inference_model
from videoattn.engine.logger import setup_logging
from videoattn.utils.distributed import (
    DistInfo,
    distributed_run,
    init_distributed,
    launch_rank,
    main_process_claim,
    resolve_device,
)


@dataclass
class RunSession:
    """One run of an entry point: this process, the device decisions, and what closes with it."""

    cfg: Config  # as the run uses it: preset expanded, device keys set (for_device)
    info: DistInfo  # rank, world size, launcher, this process's device
    normalize: DeviceNormalizer  # batches -> normalised float32 on the device (one per run)
    amp: Optional[torch.dtype]  # autocast dtype (None: off)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # closed with the session

    @classmethod
    def for_process(cls, cfg: Config, info: DistInfo, precision: Optional[str] = "test") -> "RunSession":
        """The device decisions for ``info.device``, made once. ``precision``: the config section
        whose ``mixed_precision`` sets the autocast dtype (``train`` | ``test``; None: no autocast)."""
        cfg = for_device(cfg, info.device)
        configure_backends(info.device)
        normalize = DeviceNormalizer(cfg.data.mean, cfg.data.std, cfg.model.channels_last)
        amp = autocast_dtype(getattr(cfg, precision).mixed_precision, info.device) if precision else None
        return cls(cfg, info, normalize, amp)

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def load_model(
        self, checkpoint_path: Optional[str], random_init: bool = False, trust: bool = False, pretrained: str = ""
    ) -> Tuple[torch.nn.Module, LoadedWeights]:
        """The model in eval mode on the device with the weights
        :func:`videoattn.engine.inference.resolve_weights` picks, and what was loaded."""
        return load_inference_model(self.cfg, checkpoint_path, self.device, random_init, trust, pretrained)

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> "RunSession":
        return self

    def __exit__(self, *exc) -> Optional[bool]:
        return self.stack.__exit__(*exc)


def open_session(cfg: Config, precision: Optional[str] = "test") -> RunSession:
    """A session in the process group of this launch (test, extract: made here unless the tool's
    :func:`distributed_run` made it; the tool tears it down)."""
    info = init_distributed(cfg.device, timeout_s=60 * cfg.dist_timeout_minutes)
    return RunSession.for_process(cfg, info, precision)


def one_process_session(cfg: Config, precision: Optional[str] = "test") -> RunSession:
    """A session of one process on ``cfg.device`` (predict, visualize)."""
    return RunSession.for_process(cfg, DistInfo(0, 1, 0, resolve_device(cfg.device)), precision)


@contextlib.contextmanager
def locked_session(
    cfg: Config, tool: str, names: Iterable[str], hint: str, precision: str = "train", session_class=RunSession
) -> Iterator[RunSession]:
    """Console logging, the process group with ``cfg.output_dir`` locked (:func:`distributed_run`),
    ``names`` there claimed for ``tool``, logging to its ``train.log`` (rank 0), then the device
    decisions; a ``session_class`` session that undoes all of it, in reverse, when it closes."""
    with contextlib.ExitStack() as stack:
        stack.callback(setup_logging(launch_rank()))  # no train.log before the lock
        info = stack.enter_context(distributed_run(cfg, cfg.output_dir))  # one run at a time
        main_process_claim(cfg.output_dir, tool, names, hint)  # a user's train.log stays
        stack.callback(setup_logging(info.rank, cfg.output_dir if info.is_main else None))
        session = session_class.for_process(cfg, info, precision)
        session.stack = stack
        yield session
