"""Each cell's model, built once per distinct model before anything runs: it checks what the config
schema cannot (an unknown preset, non-local locations past a stage's blocks, a batch that does not
divide by ``nproc``) and gives the parameter count and GFLOPs that results.csv reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from videoattn.ablation.grid import Cell, Grid, GridError
from videoattn.config import Config
from videoattn.models import build_model
from videoattn.models.info import count_flops, count_params
from videoattn.utils.distributed import per_process_batch
from videoattn.utils.errors import UsageError


@dataclass(frozen=True)
class ModelCost:
    """``params``: every parameter; ``gflops``: 10^9 multiply-adds of one eval forward pass on a clip
    (1, 3, data.num_frames, data.train_crop_size, data.train_crop_size), as tools/model_info.py."""

    params: int
    gflops: float


def _cost(cfg: Config) -> ModelCost:
    model = build_model(cfg.model)
    crop = cfg.data.train_crop_size
    return ModelCost(count_params(model), count_flops(model, (1, 3, cfg.data.num_frames, crop, crop)) / 1e9)


def model_costs(grid: Grid, configs: Dict[Cell, Config]) -> Dict[Cell, ModelCost]:
    """:class:`ModelCost` of every cell; :class:`GridError` naming the variant for a model that
    cannot be built or a batch that ``grid.nproc`` processes cannot share."""
    built: Dict[str, ModelCost] = {}
    costs = {}
    for cell, cfg in configs.items():
        try:
            per_process_batch(cfg.train.batch_size, "train.batch_size", grid.nproc)
            per_process_batch(cfg.test.batch_size, "test.batch_size", grid.nproc)
            key = repr((cfg.model, cfg.data.num_frames, cfg.data.train_crop_size))  # build_model resolves the preset
            if key not in built:
                built[key] = _cost(cfg)
        except (UsageError, ValueError) as e:  # an unknown preset, a block index past the stage
            raise GridError(f"{grid.path}: variant '{cell.variant}': {e}") from None
        costs[cell] = built[key]
    return costs
