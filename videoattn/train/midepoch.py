"""Mid-epoch checkpoints: stop at an update boundary when the cluster warns (SIGUSR1 before the
time limit, SIGTERM on preemption) or save when ``train.checkpoint_period_minutes`` have passed,
every rank at the same update, and let the next run continue at exactly that iteration.

In the training loop (:mod:`videoattn.train.loop`, through :class:`videoattn.train.session.TrainSession`)::

    with Interrupts(cfg.train.checkpoint_period_minutes, info) as interrupts:   # flag-only handlers
        per update:  finite, (signal, due) = sums.all_finite_and_max("loss_sum", *interrupts.flags())
                     stop, save = interrupts.decide(signal, due)     # the loop's one all-reduce, shared
                     update; if save or stop: save_position(...); if stop: raise TrainingStopped
    # a TrainingStopped ends the ``with`` quietly; interrupts.exit_code is 75 (requeue) or 143

A position checkpoint (``checkpoint_epoch_EEEEE_iter_IIIIII.pyth``) is a training checkpoint plus
``position``: the epoch, the batches done in it, the sampler's seed, the world size, the per-process
batch in videos (``loader.batch_size``) and ``data.clips_per_video``, and for every rank its RNG
states (python, numpy, torch, CUDA), its loader generator, its partial epoch sums, timings and
skipped videos. A resumed run re-creates the same sampler permutation of the videos (``seed +
epoch``), skips the ``iteration x loader.batch_size`` videos of the batches done
(:class:`ResumableDistributedSampler`) and restores each rank's part just before its next batch, so
with ``data.num_workers=0`` it computes exactly what the uninterrupted run would have (with
workers, their augmentation RNG is not saved).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Optional, Tuple

from videoattn.config import Config, config_to_dict
from videoattn.engine import checkpoint as ckpt_lib
from videoattn.train.meter import Clock, Meter
from videoattn.train.state import TrainState
from videoattn.utils.distributed import DistInfo, all_gather_object, main_process_claim
from videoattn.utils.preemption import REQUEUE_EXIT_CODE, PreemptionHandler

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)  # USR2: for NCCL 2.12.x, which took USR1


class TrainingStopped(Exception):
    """All ranks stopped at the same update boundary on a signal, a checkpoint written."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupts:
    """The preemption signals (any rank) and rank 0's checkpoint timer, as flags the loop all-reduces.

    ``with Interrupts(...)`` installs flag-only SIGUSR1/SIGUSR2/SIGTERM handlers (main thread only)
    and puts the previous ones back; it ends a :class:`TrainingStopped` quietly (``exit_code`` says
    why).
    """

    def __init__(self, period_minutes: float, info: DistInfo) -> None:
        self.period_s = 60.0 * period_minutes
        self.info = info
        self.handler = PreemptionHandler(SIGNALS)
        self.last_save = time.monotonic()
        self.exit_code = 0

    def __enter__(self) -> "Interrupts":
        try:
            self.handler.install()
        except RuntimeError as e:  # not the main thread (an in-process caller): no signal handling
            logger.warning("preemption signals not handled: %s", e)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.handler.restore()
        if isinstance(exc, TrainingStopped):
            self.exit_code = exc.exit_code
            logger.warning("%s", exc)
            return True
        return False

    def flags(self) -> Tuple[int, int]:
        """(this rank's signal level, whether rank 0's timer asks for a save) to all-reduce (MAX)."""
        due = self.info.is_main and self.period_s > 0 and time.monotonic() - self.last_save >= self.period_s
        return self.handler.level, int(due)

    def decide(self, signal_level: int, save_due: int) -> Tuple[bool, bool]:
        """(stop, save) from the all-rank maxima of :meth:`flags`: a stop always saves first."""
        stop = self.handler.agree(signal_level)
        return stop, stop or save_due > 0

    def stop_requested(self) -> bool:
        """Whether any rank got a signal since the last update (one all-reduce; every rank calls it):
        a signal during validation or a checkpoint write is acted on at the epoch's end."""
        return self.handler.should_stop(self.info.device)

    def saved(self) -> None:
        """A checkpoint was written: restart the timer."""
        self.last_save = time.monotonic()

    def stopped(self, where: str, path: str) -> TrainingStopped:
        """The exception that ends the run after the position checkpoint ``path`` was written."""
        code, got = self.handler.exit_code, self.handler.received
        cause = f"signal {signal.Signals(got).name} on this rank" if got else "a signal on another rank"
        return TrainingStopped(
            code,
            f"stopped {where} ({cause}); saved {path}; exit status {code} ("
            f"{'requeue' if code == REQUEUE_EXIT_CODE else 'terminated'}), a re-run "
            f"resumes there",
        )


# ------------------------------------------------------------------------------- save / restore
def capture_part(sums: Meter, clock: Clock, skipped: list, loader) -> dict:
    """This rank's share of a position: RNG states, loader generator, partial sums, timings, skips."""
    generator = getattr(loader, "generator", None)
    return {
        "rng": ckpt_lib.get_rng_state(),
        "sums": sums.state_dict(),
        "clock": list(clock.elapsed()),
        "skipped": [list(s) for s in skipped],
        "loader_generator": generator.get_state() if generator is not None else None,
    }


def continue_epoch(part: Optional[dict], sums: Meter, clock: Clock, loader) -> list:
    """Apply this rank's ``part`` of a mid-epoch position (None: a fresh epoch) just before the
    epoch's next batch is drawn; returns the epoch's skipped videos so far."""
    if part is None:
        return []
    ckpt_lib.set_rng_state(part["rng"])
    generator = getattr(loader, "generator", None)
    if generator is not None and part.get("loader_generator") is not None:
        generator.set_state(part["loader_generator"])
    sums.load_state_dict(part["sums"])
    clock.resume(*part["clock"])
    return [tuple(s) for s in part["skipped"]]


def save_position(
    state: TrainState, cfg: Config, info: DistInfo, sums: Meter, clock: Clock, skipped: list, loader
) -> str:
    """Write a mid-epoch checkpoint at ``state.iteration`` (every rank contributes its part; rank 0
    writes atomically and prunes superseded ones). Returns its path on every rank."""
    path = ckpt_lib.mid_epoch_checkpoint_path(cfg.output_dir, state.epoch + 1, state.iteration)
    main_process_claim(cfg.output_dir, ckpt_lib.TOOL, [ckpt_lib.checkpoint_name(path)], "use another output_dir")
    parts = all_gather_object(capture_part(sums, clock, skipped, loader))
    if info.is_main:
        position = {
            "epoch": state.epoch,
            "iteration": state.iteration,
            "seed": cfg.seed,
            "world_size": info.world_size,
            "batch_size": loader.batch_size,  # videos per process
            "clips_per_video": cfg.data.clips_per_video,
            "balance": cfg.data.balance,  # which sampler drew the epoch's order
            "accumulation_steps": cfg.train.accumulation_steps,
            "ranks": parts,
        }
        ckpt = state.checkpoint(
            config_to_dict(cfg), [p["rng"] for p in parts], world_size=info.world_size, position=position
        )
        ckpt_lib.save_checkpoint(path, ckpt)
        logger.info("saved %s (epoch %d, iteration %d)", path, state.epoch + 1, state.iteration)
        ckpt_lib.prune_checkpoints(cfg.output_dir, cfg.train.keep_last)
    return path


def resume_iteration(
    position: Optional[dict],
    info: DistInfo,
    batch_size: int,
    accumulation: int,
    batches_per_epoch: int,
    path: str,
    clips_per_video: int = 1,
    balance: str = "none",
) -> Tuple[int, Optional[dict]]:
    """(batches done in the epoch under way, this rank's part) of a checkpoint's ``position``;
    ``batch_size``: videos per process and batch (``loader.batch_size``).

    Same world size, per-process batch, ``clips_per_video`` and ``data.balance``: exactly where it
    stopped. Otherwise (a different number of processes or clips per video, or another sampler: its
    order of the epoch differs) the epoch goes on after as many videos as were done, in a different
    order (a warning says so), at an update boundary of this run.
    """
    if not position:
        return 0, None
    was = (position["world_size"], position["batch_size"], position.get("clips_per_video", 1))
    was_balance = position.get("balance", "none")  # checkpoints from before data.balance: none
    same_sampler = (was_balance == "sampler") == (balance == "sampler")  # none and loss shuffle alike
    if was == (info.world_size, batch_size, clips_per_video) and same_sampler:
        return position["iteration"], position["ranks"][info.rank]
    videos = position["iteration"] * position["batch_size"] * position["world_size"]
    iteration = min(videos // (batch_size * info.world_size), batches_per_epoch)
    if iteration < batches_per_epoch:
        iteration -= iteration % accumulation
    logger.warning(
        "%s stopped mid-epoch with %d processes x %d videos (x %d clips, data.balance=%s); this run has "
        "%d x %d (x %d, data.balance=%s): the epoch goes on at iteration %d (about as many videos), not in the "
        "same order",
        path,
        *was,
        was_balance,
        info.world_size,
        batch_size,
        clips_per_video,
        balance,
        iteration,
    )
    return iteration, None


def position_of(ckpt: dict) -> Optional[dict]:
    """The ``position`` of a mid-epoch checkpoint (None for an end-of-epoch one)."""
    position = ckpt.get("position")
    return position if isinstance(position, dict) and position.get("ranks") else None
