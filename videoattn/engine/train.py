"""The training loop: one process, or one process per device under ``torchrun``.

``train(cfg)`` sets up the process group (gloo on CPU, NCCL on CUDA), the model (DDP, optional
SyncBN), SGD + per-update LR schedule, AMP, resume/fine-tune, then runs ``solver.max_epoch``
epochs with periodic validation (``evaluate_clips``), precise BN, checkpoints and metrics.
``train.batch_size`` is the global batch; each process loads ``batch_size // world_size``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from videoattn.config import config_to_dict, save_config
from videoattn.data.loader import device_clips, unique_broken
from videoattn.engine import checkpoint as ckpt_lib
from videoattn.engine.inference import check_num_classes, check_state_fits
from videoattn.utils.distributed import (DistInfo, all_gather_object, all_reduce_mean, barrier,
                                          broadcast_object, distributed_run)
from videoattn.engine.logger import MetricsWriter, Progress, setup_logging
from videoattn.engine.precise_bn import update_bn_stats
from videoattn.engine.solver import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_LISTED_BROKEN = 20   # broken videos named per epoch summary (all are counted)


@dataclass
class TrainResult:
    model: nn.Module                      # the trained plain module (no DDP wrapper)
    epochs_run: int                       # epochs trained by this call (0 if already complete)
    best_top1: float                      # best validation top-1 (fraction) seen, -1 if never evaluated
    last_val: dict = field(default_factory=dict)   # the last validation metrics
    history: List[dict] = field(default_factory=list)  # one epoch summary per epoch run


def check_batch_size(batch_size: int, world_size: int, key: str = "train.batch_size") -> int:
    """Per-process batch for a global ``batch_size``; a clear error if it does not divide."""
    if batch_size < world_size or batch_size % world_size:
        raise ValueError(f"{key}={batch_size} is the global batch and must be a positive multiple of the "
                         f"number of processes ({world_size}); e.g. {key}={max(1, batch_size // world_size) * world_size}")
    return batch_size // world_size


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """A distinct seed per (run seed, rank, epoch); DataLoader workers derive theirs from it."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def amp_dtype_for(cfg: DictConfig, device: torch.device) -> Optional[torch.dtype]:
    mode = cfg.train.mixed_precision
    if mode not in AMP_DTYPES:
        raise ValueError(f"train.mixed_precision='{mode}': choose from {', '.join(AMP_DTYPES)}")
    if device.type == "cpu" and mode == "fp16":
        raise ValueError("train.mixed_precision=fp16 needs CUDA; on CPU use bf16 or none")
    return AMP_DTYPES[mode]


def wrap_model(model: nn.Module, cfg: DictConfig, info: DistInfo) -> nn.Module:
    """SyncBN (CUDA, ``bn.sync``) and DDP when running more than one process."""
    if info.world_size == 1:
        return model
    if cfg.bn.sync:
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.warning("bn.sync=true ignored: SyncBatchNorm needs CUDA")
    return DDP(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)


def _rank_seed_loaders(cfg: DictConfig, rank: int, epoch: int, loader) -> None:
    seed_everything(epoch_seed(cfg.seed, rank, epoch))
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def train_one_epoch(model: nn.Module, loader, optimizer, scheduler, scaler, cfg: DictConfig,
                    info: DistInfo, epoch: int, global_step: int, writer: MetricsWriter,
                    amp_dtype: Optional[torch.dtype]) -> dict:
    """One pass over ``loader``; returns the epoch's (all-rank) summary and the new global step."""
    model.train()
    n = len(loader)
    accum = max(1, cfg.train.accumulation_steps)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sums = torch.zeros(4, dtype=torch.float64)  # loss*clips, correct, clips, iterations
    data_time = compute_time = 0.0
    win = {"loss": 0.0, "n": 0, "clips": 0, "data": 0.0, "compute": 0.0}
    skipped: list = []
    progress = Progress(loader, n, f"epoch {epoch + 1}/{cfg.solver.max_epoch}", info.is_main,
                        cfg.train.log_period, logger)
    t_prev = time.perf_counter()
    for i, batch in enumerate(progress):
        t_data = time.perf_counter()
        clip = device_clips(batch["clip"], info.device, loader)
        label = batch["label"].to(info.device, non_blocking=True)
        skipped.extend(batch.get("skipped", []))
        group_start = i - i % accum
        group_size = min(accum, n - group_start)
        is_update = i + 1 == group_start + group_size
        sync = contextlib.nullcontext() if is_update or not isinstance(model, DDP) else model.no_sync()
        with sync:
            with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(clip)
            loss = F.cross_entropy(logits.float(), label)
            mean_loss = all_reduce_mean(loss.detach().clone()).item()
            if not math.isfinite(mean_loss):
                raise FloatingPointError(
                    f"non-finite training loss ({mean_loss}) at epoch {epoch + 1}, iteration {i + 1}/{n} "
                    f"(global update {global_step + 1}); stopping without writing a checkpoint for this "
                    f"epoch. Lower solver.base_lr, enable train.clip_grad_norm or check the data.")
            scaled = loss / group_size
            (scaler.scale(scaled) if scaler.is_enabled() else scaled).backward()
        lr = optimizer.param_groups[0]["lr"]
        if is_update:
            if cfg.train.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            global_step += 1
        if info.device.type == "cuda":
            torch.cuda.synchronize(info.device)
        t_end = time.perf_counter()
        b = clip.shape[0]
        sums += torch.tensor([loss.item() * b, (logits.argmax(1) == label).sum().item(), b, 1], dtype=torch.float64)
        d, c = t_data - t_prev, t_end - t_data  # waiting for data / everything else
        t_prev = t_end
        data_time, compute_time = data_time + d, compute_time + c
        win.update(loss=win["loss"] + mean_loss, n=win["n"] + 1, clips=win["clips"] + b * info.world_size,
                   data=win["data"] + d, compute=win["compute"] + c)
        progress.set(loss=mean_loss, lr=lr)
        if is_update and (global_step % max(1, cfg.train.log_period) == 0 or i + 1 == n):
            total = win["data"] + win["compute"]
            writer.write("train", global_step, epoch + (i + 1) / n, loss=win["loss"] / win["n"], lr=lr,
                         clips_per_s=win["clips"] / max(total, 1e-9),
                         data_wait_frac=win["data"] / max(total, 1e-9),
                         data_time=win["data"] / win["n"], compute_time=win["compute"] / win["n"])
            win.update(loss=0.0, n=0, clips=0, data=0.0, compute=0.0)
    if info.world_size > 1:
        torch.distributed.all_reduce(sums)
    skipped_all = unique_broken(s for part in all_gather_object(unique_broken(skipped)) for s in part)
    total = data_time + compute_time
    return {"epoch": epoch + 1, "global_step": global_step, "loss": (sums[0] / sums[2].clamp_min(1)).item(),
            "top1": (sums[1] / sums[2].clamp_min(1)).item(), "clips": int(sums[2].item()),
            "clips_per_s": sums[2].item() / max(total, 1e-9), "data_wait_frac": data_time / max(total, 1e-9),
            "skipped": len(skipped_all), "skipped_videos": skipped_all}


def _resume_or_init(model: nn.Module, optimizer, scheduler, scaler, cfg: DictConfig, info: DistInfo) -> dict:
    """Load the newest valid checkpoint in ``output_dir`` (auto_resume) or fine-tuning weights.

    Returns the loop state ``{"start_epoch", "global_step", "best_top1"}``.
    """
    state = {"start_epoch": 0, "global_step": 0, "best_top1": -1.0}
    trust = cfg.train.trust_checkpoint
    found = ckpt_lib.find_last_checkpoint(cfg.output_dir, trust) if cfg.train.auto_resume and info.is_main else None
    path = broadcast_object(found[0] if found else None)
    if path is None:
        if cfg.train.checkpoint_file:
            ckpt_lib.load_pretrained(model, cfg.train.checkpoint_file, trust)
        return state
    ckpt = found[1] if found else ckpt_lib.load_checkpoint(path, trust=trust)
    weights = ckpt_lib.unwrap_state_dict(ckpt["model_state"])
    check_state_fits(model.state_dict(), weights, path, "auto-resume from output_dir: use another "
                     "output_dir or train.auto_resume=false")
    model.load_state_dict(weights)
    optimizer.load_state_dict(ckpt["optimizer_state"])
    scheduler.load_state_dict(ckpt["scheduler_state"])
    if ckpt.get("scaler_state"):
        scaler.load_state_dict(ckpt["scaler_state"])
    rng = ckpt.get("rng_state") or []
    if len(rng) == info.world_size:
        ckpt_lib.set_rng_state(rng[info.rank])
    state.update(start_epoch=ckpt["epoch"] + 1, global_step=ckpt.get("global_step", 0),
                 best_top1=ckpt.get("best_top1", -1.0))
    logger.info("resumed from %s (epoch %d done, global step %d)", path, state["start_epoch"], state["global_step"])
    state["checkpoint"] = path
    return state


def train(cfg: DictConfig) -> TrainResult:
    """Train as configured; every process of a torchrun job calls this. See the module doc."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_batch_size(cfg.train.batch_size, world)
    if cfg.train.accumulation_steps < 1:
        raise ValueError(f"train.accumulation_steps must be >= 1, got {cfg.train.accumulation_steps}")
    restore_console = setup_logging(int(os.environ.get("RANK", "0")))  # no train.log before the lock
    try:
        with distributed_run(cfg, cfg.output_dir) as info:  # output_dir locked: one run at a time
            restore_logging = setup_logging(info.rank, cfg.output_dir if info.is_main else None)
            try:
                return _train(cfg, info)
            finally:
                restore_logging()
    finally:
        restore_console()


def _train(cfg: DictConfig, info: DistInfo) -> TrainResult:
    from videoattn.data import build_loader
    from videoattn.models import build_model

    amp_dtype = amp_dtype_for(cfg, info.device)
    if info.is_main:
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    logger.info("training on %d process(es), device %s, global batch %d (%d per process)", info.world_size,
                info.device, cfg.train.batch_size, cfg.train.batch_size // info.world_size)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg).to(info.device)
    optimizer = build_optimizer(model, cfg)
    train_loader = build_loader(cfg, "train")
    check_num_classes(train_loader.dataset.classes, cfg.model.num_classes,
                      f"the class list ({cfg.data.classes_file or 'labels of ' + cfg.data.train_split})")
    do_eval = cfg.train.eval_period > 0 and bool(cfg.data.val_split)
    val_loader = build_loader(cfg, "val") if do_eval else None
    updates_per_epoch = math.ceil(len(train_loader) / cfg.train.accumulation_steps)
    scheduler = build_scheduler(optimizer, cfg, updates_per_epoch)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp_dtype == torch.float16)
    state = _resume_or_init(model, optimizer, scheduler, scaler, cfg, info)
    ddp_model = wrap_model(model, cfg, info)
    raw = ddp_model.module if isinstance(ddp_model, DDP) else model
    result = TrainResult(raw, 0, state["best_top1"])
    max_epoch = cfg.solver.max_epoch
    if state["start_epoch"] >= max_epoch:
        logger.info("training already complete (%d epochs) in %s", max_epoch, cfg.output_dir)
        return result
    global_step = state["global_step"]
    where = {"epoch": state["start_epoch"], "iteration": None, "checkpoint": state.get("checkpoint")}
    with MetricsWriter(cfg.output_dir, enabled=info.is_main) as writer, _interrupt_line(where, train_loader):
        for epoch in range(state["start_epoch"], max_epoch):
            where.update(epoch=epoch, iteration=None)
            _rank_seed_loaders(cfg, info.rank, epoch, train_loader)
            summary = train_one_epoch(ddp_model, train_loader, optimizer, scheduler, scaler, cfg, info, epoch,
                                      global_step, writer, amp_dtype)
            where["iteration"] = len(train_loader)
            global_step = summary["global_step"]
            last = epoch + 1 == max_epoch
            is_best = False
            if val_loader is not None and ((epoch + 1) % cfg.train.eval_period == 0 or last):
                if cfg.bn.use_precise_stats:
                    update_bn_stats(raw, train_loader, cfg.bn.num_batches_precise, info.device, amp_dtype)
                from videoattn.engine.evaluate import evaluate_clips

                val = evaluate_clips(raw, val_loader, info.device)
                val_skipped = val.pop("skipped")
                val["skipped"] = len(val_skipped)
                summary["skipped_videos"] = unique_broken(summary["skipped_videos"] + val_skipped)
                result.last_val = val
                is_best = val["top1"] > result.best_top1
                result.best_top1 = max(result.best_top1, val["top1"])
                summary.update({f"val_{k}": v for k, v in val.items()})
                writer.write("val", global_step, epoch + 1, **val)
            _log_epoch(summary, result.best_top1, writer)
            periodic = (epoch + 1) % max(1, cfg.train.checkpoint_period) == 0 or last
            if periodic or is_best:
                where["checkpoint"] = _save(raw, optimizer, scheduler, scaler, cfg, info, epoch, global_step,
                                            result.best_top1, summary, periodic, is_best) or where["checkpoint"]
            result.history.append({k: v for k, v in summary.items() if k != "skipped_videos"})
            result.epochs_run += 1
            barrier()
    return result


@contextlib.contextmanager
def _interrupt_line(where: dict, loader) -> Iterator[None]:
    """Ctrl-C in the epoch loop -> ``KeyboardInterrupt("interrupted at epoch E, iteration I/N; last
    checkpoint: PATH")`` (the periodic checkpoint a re-run resumes from, or "none")."""
    try:
        yield
    except KeyboardInterrupt:
        i = where["iteration"] if where["iteration"] is not None else getattr(loader, "position", 0)
        raise KeyboardInterrupt(f"interrupted at epoch {where['epoch'] + 1}, iteration {i}/{len(loader)}; "
                                f"last checkpoint: {where['checkpoint'] or 'none'}") from None


def _log_epoch(summary: dict, best_top1: float, writer: MetricsWriter) -> None:
    skipped = summary.pop("skipped_videos")
    val = f", val top1 {100 * summary['val_top1']:.2f}% top5 {100 * summary['val_top5']:.2f}% " \
          f"loss {summary['val_loss']:.4f} (best {100 * best_top1:.2f}%)" if "val_top1" in summary else ""
    logger.info("epoch %d: train loss %.4f top1 %.2f%%, %.1f clips/s, data wait %.0f%%, %d broken videos "
                "skipped%s", summary["epoch"], summary["loss"], 100 * summary["top1"], summary["clips_per_s"],
                100 * summary["data_wait_frac"], len(skipped), val)
    for path, reason in skipped[:MAX_LISTED_BROKEN]:
        logger.warning("skipped broken video %s: %s", path, reason)
    if len(skipped) > MAX_LISTED_BROKEN:
        logger.warning("... and %d more broken videos this epoch", len(skipped) - MAX_LISTED_BROKEN)
    writer.write("epoch", summary["global_step"], summary["epoch"],
                 **{k: v for k, v in summary.items() if k not in ("epoch", "global_step")})
    summary["skipped_videos"] = skipped


def _save(model, optimizer, scheduler, scaler, cfg, info, epoch, global_step, best_top1, summary,
          periodic: bool, is_best: bool) -> Optional[str]:
    """Every rank contributes its RNG state; rank 0 writes (atomically) and prunes. Returns the
    periodic checkpoint's path (on every rank), else None."""
    path = ckpt_lib.epoch_checkpoint_path(cfg.output_dir, epoch + 1) if periodic else None
    rng = all_gather_object(ckpt_lib.get_rng_state())
    if not info.is_main:
        return path
    ckpt = ckpt_lib.make_checkpoint(
        model.state_dict(), config_to_dict(cfg), optimizer_state=optimizer.state_dict(),
        scheduler_state=scheduler.state_dict(), scaler_state=scaler.state_dict(), epoch=epoch,
        global_step=global_step, best_top1=best_top1, rng_state=rng, world_size=info.world_size,
        metrics={k: v for k, v in summary.items() if k != "skipped_videos"})
    if periodic:
        ckpt_lib.save_checkpoint(path, ckpt)
        logger.info("saved %s", path)
        ckpt_lib.prune_checkpoints(cfg.output_dir, cfg.train.keep_last)
    if is_best:
        ckpt_lib.save_checkpoint(ckpt_lib.best_checkpoint_path(cfg.output_dir), ckpt)
        logger.info("new best val top1 %.2f%%: saved %s", 100 * best_top1, ckpt_lib.best_checkpoint_path(cfg.output_dir))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/train_net.py``: parse ``--config CFG [key=value ...]`` and train; 1 on a usage error."""
    from videoattn.cli import add_trust_argument, config_parser, exit_on_user_error, parse_config

    parser = config_parser("Train a video model: one process, or one per device under torchrun "
                           "(torchrun --nproc_per_node=N tools/train_net.py --config CFG).")
    add_trust_argument(parser)  # = train.trust_checkpoint=true
    args, cfg = parse_config(parser, argv)
    if args.trust_checkpoint:
        cfg.train.trust_checkpoint = True
    if not cfg.train.enable:
        print("train.enable=false: nothing to do")
        return 0
    with exit_on_user_error(distributed=False):  # locked/unwritable output_dir, disk full, timeout, Ctrl-C
        try:
            train(cfg)
        except (ValueError, FloatingPointError, ckpt_lib.CheckpointError) as e:
            print(f"error (rank {os.environ.get('RANK', '0')}): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return 1
    return 0
