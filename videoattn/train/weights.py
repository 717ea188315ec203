"""Where training's weights come from at start-up: the newest valid checkpoint in ``output_dir``
(auto-resume, also mid-epoch), else ``train.checkpoint_file`` or public weights ``model.pretrained``
for fine-tuning (a head of another size is re-initialised: see
:func:`videoattn.engine.checkpoint.load_pretrained`)."""

from __future__ import annotations

import logging
from typing import Optional

from videoattn.config import Config
from videoattn.engine import checkpoint as ckpt_lib
from videoattn.models.pretrained import load_pretrained_weights
from videoattn.train.midepoch import position_of, resume_iteration
from videoattn.train.state import TrainState
from videoattn.utils.distributed import DistInfo, broadcast_object
from videoattn.utils.errors import UsageError

logger = logging.getLogger(__name__)


def resume_or_finetune(state: TrainState, cfg: Config, info: DistInfo, loader) -> Optional[str]:
    """Restore ``state`` from the newest valid checkpoint in ``output_dir`` (``train.auto_resume``),
    also a mid-epoch one (then ``state.iteration`` > 0), else load ``train.checkpoint_file`` or the
    public weights ``model.pretrained`` for fine-tuning. Returns the checkpoint resumed from."""
    trust = cfg.train.trust_checkpoint
    found = ckpt_lib.find_last_checkpoint(cfg.output_dir, trust) if cfg.train.auto_resume and info.is_main else None
    path = broadcast_object(found[0] if found else None)
    if path is None:
        if cfg.train.checkpoint_file and cfg.model.pretrained:
            raise UsageError(
                f"train.checkpoint_file={cfg.train.checkpoint_file} and model.pretrained="
                f"{cfg.model.pretrained} both name initial weights; set one of them"
            )
        if cfg.train.checkpoint_file:
            ckpt_lib.load_pretrained(state.model, cfg.train.checkpoint_file, trust)
        elif cfg.model.pretrained:  # every rank reads the cached file; one downloads it (file lock)
            loaded = load_pretrained_weights(state.model, cfg.model.pretrained)
            logger.info(
                "initial weights: pretrained %s (%s, sha256 %s); %s",
                loaded.name,
                loaded.path,
                loaded.sha256[:16],
                "; ".join(loaded.notes) or "every tensor loaded",
            )
        return None
    ckpt = found[1] if found else ckpt_lib.load_checkpoint(path, trust=trust)
    state.restore(ckpt, path)
    rng = ckpt.get("rng_state") or []
    if len(rng) == info.world_size:
        ckpt_lib.set_rng_state(rng[info.rank])
    state.iteration, state.resume_part = resume_iteration(
        position_of(ckpt),
        info,
        loader.batch_size,
        cfg.train.accumulation_steps,
        len(loader),
        path,
        cfg.data.clips_per_video,
        cfg.data.balance,
    )
    logger.info(
        "resumed from %s (epoch %d done, global step %d%s)",
        path,
        state.epoch,
        state.step,
        f", epoch {state.epoch + 1} at iteration {state.iteration}" if state.iteration else "",
    )
    return path
