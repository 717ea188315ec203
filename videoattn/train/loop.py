"""The training loop: one process, or one process per device under ``torchrun`` or ``srun``.

Read top to bottom, :func:`train` does::

    open the session: lock output_dir, init the process group (gloo on CPU, NCCL on CUDA), logging,
                      the device decisions (:class:`videoattn.train.session.TrainSession`)
    state = TrainState(model, optimizer, scheduler, scaler)     # + epoch, step, best_top1, iteration
    resume state from output_dir, also mid-epoch (or load fine-tuning weights)
    for each remaining epoch:
        train_one_epoch(state)        # forward, backward, update per batch; device-side sums;
                                      # a signal or the timer: position checkpoint (stop: exit 75/143)
        validate (precise BN first)   # every train.eval_period epochs and after the last
        log the epoch, save checkpoints (periodic, best), prune old ones

``train.batch_size`` is the global batch of clips per update; each process loads ``batch_size //
world_size`` clips: ``// data.clips_per_video`` videos of N clips (an epoch: N x the steps; see
:func:`videoattn.data.loader.videos_per_batch`, also for how PySlowFast's AUG.NUM_SAMPLE differs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from videoattn.config import Config, config_to_dict, save_config
from videoattn.data import build_dataset, build_loader
from videoattn.data.balance import Balance, weighted_cross_entropy
from videoattn.data.dataset import missing_report_name
from videoattn.data.loader import unique_broken, videos_per_batch
from videoattn.engine import checkpoint as ckpt_lib
from videoattn.engine.inference import check_num_classes
from videoattn.engine.logger import MetricsWriter, Progress
from videoattn.evaluation.evaluate import evaluate_clips
from videoattn.evaluation.metrics import NonFiniteLossError
from videoattn.models import build_model
from videoattn.models.builder import compile_model
from videoattn.train.freeze import freeze_stages
from videoattn.train.meter import Clock, Meter
from videoattn.train.midepoch import continue_epoch
from videoattn.train.precise_bn import update_bn_stats
from videoattn.train.session import TrainSession
from videoattn.train.solver import build_optimizer, build_scheduler, schedule_lr
from videoattn.train.state import TrainState
from videoattn.train.weights import resume_or_finetune
from videoattn.utils.distributed import (
    DistInfo,
    all_gather_object,
    barrier,
    launch_world_size,
    main_process_claim,
    per_process_batch,
)

logger = logging.getLogger(__name__)
MAX_LISTED_BROKEN = 20  # broken videos named per epoch summary (all are counted)
# What train_net writes into output_dir, claimed (videoattn/utils/outputs.py) before the first write;
# the checkpoints/ files are claimed as they are saved, the best one here too (a refusal comes early).
OUTPUT_NAMES = [
    "config.yaml",
    "train.log",
    "metrics.jsonl",
    "tensorboard",
    missing_report_name("train"),
    missing_report_name("val"),
    ckpt_lib.checkpoint_name(ckpt_lib.BEST_NAME),
]
OUTPUT_HINT = "use another output_dir"


@dataclass
class EpochSummary:
    """An epoch's numbers over all ranks, and its broken videos."""

    epoch: int  # 1-based
    global_step: int
    loss: float
    top1: float
    clips: int
    clips_per_s: float
    data_wait_frac: float
    skipped: int  # broken training videos (each file once)
    broken: List[Tuple[str, str]]  # (path, reason) of the epoch's broken videos, training and validation
    val: Dict[str, float] = field(default_factory=dict)  # the validation metrics, if it validated

    def to_metrics(self) -> dict:
        """The numbers as logged, saved in checkpoints and kept in :attr:`TrainResult.history`."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "loss": self.loss,
            "top1": self.top1,
            "clips": self.clips,
            "clips_per_s": self.clips_per_s,
            "data_wait_frac": self.data_wait_frac,
            "skipped": self.skipped,
            **{f"val_{k}": v for k, v in self.val.items()},
        }


@dataclass
class TrainResult:
    model: nn.Module  # the trained plain module (no DDP wrapper)
    epochs_run: int  # epochs trained by this call (0 if already complete)
    best_top1: float  # best validation top-1 (fraction) seen, -1 if never evaluated
    last_val: dict = field(default_factory=dict)  # the last validation metrics
    history: List[dict] = field(default_factory=list)  # one epoch summary per epoch run
    exit_code: int = 0  # 75 (requeue) / 143: stopped on a signal, a checkpoint written


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """A distinct seed per (run seed, rank, epoch); DataLoader workers derive theirs from it."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def wrap_model(model: nn.Module, sync_bn: bool, info: DistInfo) -> nn.Module:
    """SyncBN (CUDA, ``bn.sync``) and DDP when running more than one process."""
    if info.world_size == 1:
        return model
    if sync_bn:
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.warning("bn.sync=true ignored: SyncBatchNorm needs CUDA")
    return DDP(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)


# ------------------------------------------------------------------------------------------- loop
def train(cfg: Config) -> TrainResult:
    """Train as configured; every process of a torchrun job calls this. See the module doc."""
    videos_per_batch(cfg.train.batch_size, cfg.data.clips_per_video, launch_world_size())  # before any set-up
    with TrainSession.open(cfg, ckpt_lib.TOOL, OUTPUT_NAMES, OUTPUT_HINT) as session:
        return _train(session)


def _train(session: TrainSession) -> TrainResult:
    cfg, info = session.cfg, session.info
    if info.is_main:
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    logger.info(
        "training on %d process(es) (%s), device %s, global batch %d clips (%d per process, %d per video)",
        info.world_size,
        info.launcher,
        info.device,
        cfg.train.batch_size,
        cfg.train.batch_size // info.world_size,
        cfg.data.clips_per_video,
    )
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg.model).to(info.device)
    session.frozen = freeze_stages(model, cfg.train.freeze)  # before the optimizer: frozen ones stay out
    train_loader, val_loader = _loaders(cfg, info)
    balance = Balance.of(cfg.data.balance, [y for _, y in train_loader.dataset.videos], cfg.model.num_classes)
    logger.info("%s", balance.describe())
    session.class_weights = None if balance.weights is None else balance.weights.to(info.device)
    updates_per_epoch = -(-len(train_loader) // cfg.train.accumulation_steps)
    optimizer = build_optimizer(model, cfg.solver)
    state = TrainState(
        model,
        optimizer,
        build_scheduler(optimizer, cfg.solver, updates_per_epoch),
        torch.amp.GradScaler(info.device.type, enabled=session.amp == torch.float16),
    )
    session.position.checkpoint = resume_or_finetune(state, cfg, info, train_loader)
    net = compile_model(wrap_model(model, cfg.bn.sync, info), cfg.train.compile)
    result = TrainResult(model, 0, state.best_top1)
    if state.epoch >= cfg.solver.max_epoch:
        logger.info("training already complete (%d epochs) in %s", cfg.solver.max_epoch, cfg.output_dir)
        return result
    with session.training(train_loader):  # ends a TrainingStopped
        while state.epoch < cfg.solver.max_epoch:
            _run_epoch(net, train_loader, val_loader, state, session, result)
    result.best_top1, result.exit_code = state.best_top1, session.exit_code
    return result


def _run_epoch(
    net: nn.Module, train_loader, val_loader, state: TrainState, session: TrainSession, result: TrainResult
) -> None:
    """One epoch: train, validate if due, log, save checkpoints if due; stop after it on a signal."""
    cfg, position = session.cfg, session.position
    position.epoch, position.iteration = state.epoch, None
    if not state.iteration:  # else a mid-epoch resume: RNG restored where it stopped
        seed_everything(epoch_seed(cfg.seed, session.info.rank, state.epoch))
    train_loader.sampler.set_epoch(state.epoch, skip=state.iteration * train_loader.batch_size)  # videos
    summary = train_one_epoch(net, train_loader, state, session)
    state.epoch, state.iteration = state.epoch + 1, 0
    position.iteration = len(train_loader)
    is_best = _validate_if_due(state, session, train_loader, val_loader, summary, result)
    _log_epoch(summary, state.best_top1, session.writer)
    stop = session.interrupts.stop_requested()  # a signal during validation: stop after this epoch's save
    position.checkpoint = _save_if_due(state, session, summary, is_best, stop) or position.checkpoint
    result.history.append(summary.to_metrics())
    result.epochs_run += 1
    barrier()
    if stop:
        session.stop_after_epoch(state)


def _loaders(cfg: Config, info: DistInfo):
    """The training loader (its class list checked against ``model.num_classes``) and the
    validation loader (None when ``train.eval_period`` is 0 or there is no val split)."""
    batch = per_process_batch(cfg.train.batch_size, "train.batch_size")
    train_set = build_dataset(cfg.data, "train", report_dir=cfg.output_dir)
    check_num_classes(
        train_set.classes,
        cfg.model.num_classes,
        f"the class list ({cfg.data.classes_file or 'labels of ' + cfg.data.train_split})",
    )
    videos = videos_per_batch(cfg.train.batch_size, cfg.data.clips_per_video)  # batches of videos x N clips
    train_loader = build_loader(train_set, cfg.data, videos, cfg.seed, info.device)
    if cfg.train.eval_period == 0 or not cfg.data.val_split:
        return train_loader, None
    val_set = build_dataset(cfg.data, "val", report_dir=cfg.output_dir)
    return train_loader, build_loader(val_set, cfg.data, batch, cfg.seed, info.device)


def train_one_epoch(net: nn.Module, loader, state: TrainState, session: TrainSession) -> EpochSummary:
    """One pass over ``loader`` (an update every ``train.accumulation_steps`` batches); returns the
    epoch's summary over all ranks. Sums stay on the device; ranks sync once per update (the
    non-finite-loss check, shared with the interrupt flags) and at log points."""
    cfg, info = session.cfg, session.info
    net.train()
    session.frozen.bn_eval(state.model)  # train.freeze: their BN layers back to eval mode
    start, accum = state.iteration, cfg.train.accumulation_steps
    n = start + len(loader)  # the loader yields the batches after ``start``
    epoch_sums, window = Meter(info.device), Meter(info.device)
    clock = Clock()
    skipped = continue_epoch(state.resume_part, epoch_sums, clock, loader)
    state.resume_part, session.position.start = None, start
    progress = Progress(
        loader,
        n,
        f"epoch {state.epoch + 1}/{cfg.solver.max_epoch}",
        info.is_main,
        cfg.train.log_period,
        logger,
        start=start,
    )
    for i, batch in enumerate(progress, start):
        clock.got_batch()
        clip, label = session.normalize(batch["clip"], info.device), batch["label"].to(info.device, non_blocking=True)
        skipped.extend(batch.get("skipped", []))
        group_size = min(accum, n - (i - i % accum))
        is_update = (i % accum) + 1 == group_size
        loss, correct = _forward_backward(net, clip, label, group_size, is_update, state, session)
        for meter in (epoch_sums, window):
            meter.add(loss_sum=loss.detach() * len(label), correct=correct, clips=len(label), batches=1)
        if is_update:
            flags = session.agree(epoch_sums)  # the update's one all-reduce: finite loss, signals, timer
            if not flags.finite:
                raise _non_finite_loss(state, i, n)
            _update(state, cfg.train.clip_grad_norm)
            state.iteration = i + 1
            if state.step % cfg.train.log_period == 0 or i + 1 == n:
                session.position.loss = _write_window(window, clock, state, session.writer, (i + 1) / n)
            session.maybe_checkpoint(flags, state, epoch_sums, clock, skipped, loader, n)
        progress.set(loss=session.position.loss, lr=schedule_lr(state.optimizer))
        clock.wait_for_batch()
    return _epoch_summary(epoch_sums, clock, skipped, state)


def _forward_backward(net, clip, label, group_size: int, is_update: bool, state: TrainState, session: TrainSession):
    """Loss ``(,)`` and correct count of one batch; gradients accumulated (DDP syncs them only on
    the batch that completes an update)."""
    ddp = getattr(net, "_orig_mod", net)  # the DDP wrapper inside torch.compile's, if any
    sync = contextlib.nullcontext() if is_update or not isinstance(ddp, DDP) else ddp.no_sync()
    with sync:
        with torch.autocast(session.device.type, dtype=session.amp, enabled=session.amp is not None):
            logits = net(clip)
        logits, weights = logits.float(), session.class_weights  # weights: data.balance=loss
        loss = F.cross_entropy(logits, label) if weights is None else weighted_cross_entropy(logits, label, weights)
        scaled = loss / group_size
        (state.scaler.scale(scaled) if state.scaler.is_enabled() else scaled).backward()
    return loss, (logits.argmax(1) == label).sum()


def _non_finite_loss(state: TrainState, i: int, n: int) -> NonFiniteLossError:
    """Every rank stops before the update when any rank's loss so far is not finite."""
    return NonFiniteLossError(
        f"non-finite training loss at epoch {state.epoch + 1}, iteration {i + 1}/{n} (global update "
        f"{state.step + 1}); stopping without writing a checkpoint for this epoch. Lower solver.base_lr, "
        f"enable train.clip_grad_norm or check the data."
    )


def _update(state: TrainState, clip_grad_norm: float) -> None:
    """One optimizer update (with AMP scaling and optional clipping), then the LR schedule."""
    if clip_grad_norm > 0:
        state.scaler.unscale_(state.optimizer)
        params = [p for g in state.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step += 1


def _write_window(
    window: Meter, clock: Clock, state: TrainState, writer: MetricsWriter, epoch_fraction: float
) -> float:
    """A ``train`` metrics row for the batches since the last one (all ranks); returns its loss."""
    sums = window.read()  # the sync point: all ranks, then host floats
    window.reset()
    elapsed, data = clock.window()
    batches = max(sums["batches"], 1)
    loss = sums["loss_sum"] / max(sums["clips"], 1)
    writer.write(
        "train",
        state.step,
        state.epoch + epoch_fraction,
        loss=loss,
        lr=schedule_lr(state.optimizer),
        clips_per_s=sums["clips"] / elapsed,
        data_wait_frac=data / elapsed,
        data_time=data / batches,
        compute_time=(elapsed - data) / batches,
    )
    return loss


def _epoch_summary(sums: Meter, clock: Clock, skipped: list, state: TrainState) -> EpochSummary:
    """The epoch's numbers over all ranks, and its broken videos (each file once)."""
    total = sums.read()
    elapsed = max(time.perf_counter() - clock.start, 1e-9)
    broken = unique_broken(s for part in all_gather_object(unique_broken(skipped)) for s in part)
    clips = max(total["clips"], 1)
    return EpochSummary(
        epoch=state.epoch + 1,
        global_step=state.step,
        loss=total["loss_sum"] / clips,
        top1=total["correct"] / clips,
        clips=int(total["clips"]),
        clips_per_s=total["clips"] / elapsed,
        data_wait_frac=clock.data / elapsed,
        skipped=len(broken),
        broken=broken,
    )


# ------------------------------------------------------------------ resume, validation, checkpoints
def _validate_if_due(
    state: TrainState, session: TrainSession, train_loader, val_loader, summary: EpochSummary, result: TrainResult
) -> bool:
    """Validate every ``train.eval_period`` epochs and after the last (precise BN first); sets
    ``summary.val``; returns whether this is the best validation so far."""
    cfg = session.cfg
    last = state.epoch == cfg.solver.max_epoch
    if val_loader is None or not (state.epoch % cfg.train.eval_period == 0 or last):
        return False
    if cfg.bn.use_precise_stats:
        update_bn_stats(
            state.model,
            train_loader,
            cfg.bn.num_batches_precise,
            session.device,
            session.normalize,
            session.amp,
            frozen=session.frozen.bn_layers(state.model),
        )
    val = evaluate_clips(state.model, val_loader, session.device, session.normalize, session.amp)
    val_skipped = val.pop("skipped")
    val["skipped"] = len(val_skipped)
    summary.broken = unique_broken(summary.broken + val_skipped)
    result.last_val = val
    is_best = val["top1"] > state.best_top1
    state.best_top1 = max(state.best_top1, val["top1"])
    summary.val = dict(val)
    session.writer.write("val", state.step, state.epoch, **val)
    return is_best


def _save_if_due(
    state: TrainState, session: TrainSession, summary: EpochSummary, is_best: bool, stopping: bool
) -> Optional[str]:
    """Periodic (every ``train.checkpoint_period`` epochs, the last, and when ``stopping``) and best
    checkpoints. Every rank contributes its RNG state; rank 0 writes (atomically) and prunes.
    Returns the periodic checkpoint's path (on every rank), else None."""
    cfg, info = session.cfg, session.info
    periodic = state.epoch % cfg.train.checkpoint_period == 0 or state.epoch == cfg.solver.max_epoch or stopping
    if not (periodic or is_best):
        return None
    path = ckpt_lib.epoch_checkpoint_path(cfg.output_dir, state.epoch) if periodic else None
    best = ckpt_lib.best_checkpoint_path(cfg.output_dir) if is_best else None
    main_process_claim(
        cfg.output_dir, ckpt_lib.TOOL, [ckpt_lib.checkpoint_name(p) for p in (path, best) if p], OUTPUT_HINT
    )
    rng = all_gather_object(ckpt_lib.get_rng_state())
    session.interrupts.saved()
    if not info.is_main:
        return path
    ckpt = state.checkpoint(config_to_dict(cfg), rng, world_size=info.world_size, metrics=summary.to_metrics())
    if periodic:
        ckpt_lib.save_checkpoint(path, ckpt)
        logger.info("saved %s", path)
        ckpt_lib.prune_checkpoints(cfg.output_dir, cfg.train.keep_last)
    if is_best:
        ckpt_lib.save_checkpoint(best, ckpt)
        logger.info("new best val top1 %.2f%%: saved %s", 100 * state.best_top1, best)
    return path


def _log_epoch(summary: EpochSummary, best_top1: float, writer: MetricsWriter) -> None:
    """The epoch's log line, its broken videos (the first :data:`MAX_LISTED_BROKEN`) and metrics row."""
    val = summary.val
    val_line = (
        f", val top1 {100 * val['top1']:.2f}% top5 {100 * val['top5']:.2f}% loss {val['loss']:.4f} "
        f"(best {100 * best_top1:.2f}%)"
        if val
        else ""
    )
    logger.info(
        "epoch %d: train loss %.4f top1 %.2f%%, %.1f clips/s, data wait %.0f%%, %d broken videos skipped%s",
        summary.epoch,
        summary.loss,
        100 * summary.top1,
        summary.clips_per_s,
        100 * summary.data_wait_frac,
        len(summary.broken),
        val_line,
    )
    for path, reason in summary.broken[:MAX_LISTED_BROKEN]:
        logger.warning("skipped broken video %s: %s", path, reason)
    if len(summary.broken) > MAX_LISTED_BROKEN:
        logger.warning("... and %d more broken videos this epoch", len(summary.broken) - MAX_LISTED_BROKEN)
    metrics = summary.to_metrics()
    writer.write(
        "epoch",
        summary.global_step,
        summary.epoch,
        **{k: v for k, v in metrics.items() if k not in ("epoch", "global_step")},
    )
