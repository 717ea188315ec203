"""Run under ``torchrun --nproc_per_node=2`` by tests/engine/test_train_ddp.py (not a test itself).

ddp_worker.py grad OUT_DIR              DDP gradient vs single-process gradient; precise-BN pooling
ddp_worker.py train OUT_DIR CFG [k=v]   videoattn.train.loop.train(); each rank saves its weights
"""

import copy
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from videoattn.config import load_config
from videoattn.data.transforms import DeviceNormalizer
from videoattn.models import build_model
from videoattn.train.loop import train, wrap_model
from videoattn.train.precise_bn import update_bn_stats
from videoattn.utils.distributed import all_gather_object, init_distributed


def small_overrides(root: str, out: str, *extra: str) -> list:
    """A training run of a few seconds per epoch on the ``synthetic_root`` fixture (8 classes,
    3 train videos each): the demo model at half width, 4 frames of 32x32."""
    return [
        f"data.root={root}",
        f"output_dir={out}",
        "model.preset=I3D_NL_CBAM_R18",
        "model.base_channels=8",
        "model.num_classes=8",
        "model.dropout=0.0",
        "data.num_frames=4",
        "data.sampling_rate=6",
        "data.train_jitter_scales=[32,40]",
        "data.train_crop_size=32",
        "data.test_crop_size=32",
        "data.random_flip=false",
        "data.num_workers=0",
        "data.classes_file=classes.txt",
        "device=cpu",
        "train.batch_size=8",
        "solver.base_lr=0.04",
        "solver.lr_policy=steps",
        "solver.warmup_epochs=0",
        "solver.max_epoch=3",
        "solver.weight_decay=1e-4",
        "bn.use_precise_stats=true",
        "bn.num_batches_precise=100",
        "train.log_period=2",
        *extra,
    ]


def grad_check(out_dir: str) -> None:
    info = init_distributed("cpu")
    cfg = load_config(None, ["model.preset=I3D_NL_CBAM_R18", "model.base_channels=8", "model.num_classes=4"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()  # BN uses running stats, dropout off: per-sample independent
    single = copy.deepcopy(model)
    ddp = wrap_model(model, cfg.bn.sync, info)
    g = torch.Generator().manual_seed(123)
    union_x, union_y = torch.randn(4, 3, 4, 32, 32, generator=g), torch.randint(0, 4, (4,), generator=g)
    part = slice(2 * info.rank, 2 * info.rank + 2)
    F.cross_entropy(ddp(union_x[part]), union_y[part]).backward()
    F.cross_entropy(single(union_x), union_y).backward()
    diffs = {
        n: (p.grad - q.grad).abs().max().item() / (q.grad.abs().max().item() + 1e-12)
        for (n, p), (_, q) in zip(model.named_parameters(), single.named_parameters())
        if q.grad is not None
    }
    local_only = nn.utils.parameters_to_vector([p.grad for p in single.parameters()])
    # Precise BN: each rank sees differently distributed data; the pooled statistics must agree.
    bn_model = nn.Sequential(nn.BatchNorm3d(3))
    shift = 2.0 * info.rank
    batches = [{"clip": torch.randn(2, 3, 2, 8, 8, generator=g) + shift} for _ in range(3)]
    used = update_bn_stats(
        bn_model, batches, num_batches=10, device=torch.device("cpu"), normalize=DeviceNormalizer([0, 0, 0], [1, 1, 1])
    )  # float clips: moved only
    stats = all_gather_object((bn_model[0].running_mean.tolist(), bn_model[0].running_var.tolist(), used))
    if info.rank == 0:
        with open(os.path.join(out_dir, "grad.json"), "w") as f:
            json.dump(
                {
                    "rel_diff": diffs,
                    "num_params": len(list(model.parameters())),
                    "grad_norm": local_only.norm().item(),
                    "bn": stats,
                    "is_ddp": isinstance(ddp, nn.parallel.DistributedDataParallel),
                },
                f,
            )
    dist.destroy_process_group()


def train_run(out_dir: str, config: str, overrides) -> None:
    cfg = load_config(config, overrides)
    result = train(cfg)
    rank = int(os.environ.get("RANK", "0"))
    torch.save(result.model.state_dict(), os.path.join(out_dir, f"rank{rank}_weights.pt"))


if __name__ == "__main__":
    if sys.argv[1] == "grad":
        grad_check(sys.argv[2])
    else:
        train_run(sys.argv[2], sys.argv[3], sys.argv[4:])
