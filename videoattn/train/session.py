"""The training part of the run session (:class:`TrainSession`): the metrics writer, the preemption
signals and the checkpoint timer, and the run's position (for the Ctrl-C line and the checkpoint a
re-run resumes from), as typed fields.

In the training loop (:mod:`videoattn.train.loop`)::

    with TrainSession.open(cfg, ...) as session:          # lock, process group, logging, device
        ...
        with session.training(train_loader):               # writer, Ctrl-C line, signals + timer
            per update:  flags = session.agree(epoch_sums)  # the update's one all-reduce
                         update; log; session.maybe_checkpoint(flags, state, ...)
    # a TrainingStopped ends ``training`` quietly; session.exit_code is 75 (requeue) or 143
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

import torch

from videoattn.config import Config
from videoattn.engine.logger import MetricsWriter
from videoattn.engine.session import RunSession, locked_session
from videoattn.train.freeze import FrozenPart
from videoattn.train.meter import Clock, Meter
from videoattn.train.midepoch import Interrupts, save_position
from videoattn.train.state import TrainState


@dataclass
class Position:
    """Where the run is: what the Ctrl-C line says, and the checkpoint a re-run resumes from."""

    epoch: int = 0  # the epoch under way (0-based)
    iteration: Optional[int] = None  # its batches, once it ended (None: under way, see ``start``)
    start: int = 0  # the batch the epoch under way (re)started at
    loss: float = float("nan")  # the last logged training loss (for the progress bar)
    checkpoint: Optional[str] = None  # the last checkpoint written or resumed from (periodic or mid-epoch)

    def interrupted(self, loader) -> str:
        """``interrupted at epoch E, iteration I/N; last checkpoint: PATH`` (or ``none``)."""
        i = self.iteration if self.iteration is not None else self.start + getattr(loader, "position", 0)
        return (
            f"interrupted at epoch {self.epoch + 1}, iteration {i}/{len(loader)}; "
            f"last checkpoint: {self.checkpoint or 'none'}"
        )


@contextlib.contextmanager
def interrupt_line(position: Position, loader) -> Iterator[None]:
    """Ctrl-C in the epoch loop -> ``KeyboardInterrupt(position.interrupted(loader))``."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(position.interrupted(loader)) from None


@dataclass(frozen=True)
class StepFlags:
    """What the ranks agree on before an update, in one all-reduce (:meth:`TrainSession.agree`)."""

    finite: bool  # every rank's loss so far is finite (else: stop, no update)
    stop: bool = False  # a rank got a preemption signal: save the position, then stop
    save: bool = False  # save the position now (a stop, or rank 0's checkpoint timer)


@dataclass
class TrainSession(RunSession):
    """A :class:`RunSession` that trains: see the module doc."""

    writer: Optional[MetricsWriter] = None  # metrics.jsonl + TensorBoard (rank 0), during :meth:`training`
    interrupts: Optional[Interrupts] = None  # preemption signals and the checkpoint timer, likewise
    position: Position = field(default_factory=Position)
    class_weights: Optional[torch.Tensor] = None  # (C,) the loss's, under data.balance=loss (videoattn.data.balance)
    frozen: FrozenPart = field(default_factory=lambda: FrozenPart([], 0, 0))  # train.freeze, set at start-up

    @classmethod
    def open(cls, cfg: Config, tool: str, names: Iterable[str], hint: str):
        """:func:`locked_session` of ``cfg.output_dir`` (autocast: ``train.mixed_precision``)."""
        return locked_session(cfg, tool, names, hint, "train", cls)

    @contextlib.contextmanager
    def training(self, loader) -> Iterator["TrainSession"]:
        """The epochs' scope: the metrics writer, the Ctrl-C line (:class:`Position`) and the
        signals and timer (:class:`Interrupts`); a :class:`TrainingStopped` ends it quietly
        (:attr:`exit_code` says why)."""
        with contextlib.ExitStack() as stack:
            self.writer = stack.enter_context(MetricsWriter(self.cfg.output_dir, enabled=self.is_main))
            stack.enter_context(interrupt_line(self.position, loader))
            self.interrupts = stack.enter_context(Interrupts(self.cfg.train.checkpoint_period_minutes, self.info))
            yield self

    @property
    def exit_code(self) -> int:
        """0, or 75 (requeue) / 143 after a stop on a signal."""
        return self.interrupts.exit_code

    def agree(self, sums: Meter) -> StepFlags:
        """Whether every rank's ``loss_sum`` is finite, whether a rank got a signal and whether rank
        0's timer is due: the update's one all-reduce (every rank calls it at every update)."""
        finite, (signal_level, save_due) = sums.all_finite_and_max("loss_sum", *self.interrupts.flags())
        if not finite:
            return StepFlags(False)
        stop, save = self.interrupts.decide(signal_level, save_due)
        return StepFlags(True, stop, save)

    def maybe_checkpoint(
        self, flags: StepFlags, state: TrainState, sums: Meter, clock: Clock, skipped: list, loader, batches: int
    ) -> None:
        """After an update: a position checkpoint if ``flags`` ask (every rank), then the stop if
        they ask (:class:`TrainingStopped`, ``batches``: the epoch's)."""
        if flags.save:
            self.position.checkpoint = save_position(state, self.cfg, self.info, sums, clock, skipped, loader)
            self.interrupts.saved()
        if flags.stop:
            raise self.interrupts.stopped(
                f"in epoch {state.epoch + 1} at iteration {state.iteration}/{batches}", self.position.checkpoint
            )

    def stop_after_epoch(self, state: TrainState) -> None:
        """The stop at an epoch's end (a signal during validation or a save), its checkpoint written."""
        raise self.interrupts.stopped(f"after epoch {state.epoch}", self.position.checkpoint)
