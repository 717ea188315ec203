"""Fine-tuning (issue 23): ``train.freeze``, ``solver.head_lr_mult`` / ``backbone_lr_mult``, and a real
fine-tuning run from a checkpoint trained on the synthetic set to another task with fewer classes
(a folder per class): the head is re-initialised at the new size, the frozen stages' weights and BN
statistics stay bit-identical through training, validation and precise BN, the rest trains."""

import csv
import os
import shutil

import pytest
import torch
from ddp_worker import small_overrides
from torch import nn

from videoattn.config import ConfigError, load_config
from videoattn.config.schema import FREEZABLE_STAGES
from videoattn.engine import checkpoint as ck
from videoattn.models import build_model
from videoattn.train.freeze import freeze_stages
from videoattn.train.loop import train
from videoattn.train.solver import build_optimizer, build_scheduler, lr_at_epoch, schedule_lr
from videoattn.train.state import TrainState
from videoattn.utils.serialization import CheckpointError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
TINY = ["model.preset=I3D_NL_CBAM_R18", "model.base_channels=8", "model.num_classes=3", "model.dropout=0"]
TARGET = ["growing", "shrinking", "fading in"]  # the new task: 3 of the source's 8 classes, a folder each


def _tiny(*overrides):
    cfg = load_config(None, [*TINY, *overrides])
    torch.manual_seed(0)
    return cfg, build_model(cfg.model)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 4, 32, 32, generator=g), torch.randint(0, 3, (2,), generator=g)


def _step(model, opt, sched, seed):
    clip, label = _batch(seed)
    nn.functional.cross_entropy(model(clip), label).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sched.step()


# ------------------------------------------------------------------------------ config and groups
def test_unknown_stage_is_one_config_line_and_every_name_is_a_stage_of_the_model():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.freeze=[stem,res9]"])
    assert str(e.value) == (
        "override 'train.freeze=[stem,res9]': train.freeze=['stem', 'res9'] must be a list of values, "
        "each one of stem | res2 | res3 | res4 | res5"
    )
    _, model = _tiny()
    names = dict(model.named_children())
    assert all(any(p.numel() for p in names[s].parameters()) for s in FREEZABLE_STAGES)


def test_frozen_stages_stay_out_of_the_optimizer_and_groups_carry_their_multipliers():
    cfg, model = _tiny("train.freeze=[stem,res2]", "solver.zero_wd_1d_param=true", "solver.backbone_lr_mult=0.1")
    part = freeze_stages(model, cfg.train.freeze)
    frozen = [n for n, p in model.named_parameters() if n.split(".")[0] in ("stem", "res2")]
    assert part.frozen_params == sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    assert part.total_params == sum(p.numel() for p in model.parameters())
    assert "frozen stages: stem, res2" in part.line() and f"{part.frozen_params:,} of" in part.line()
    assert all(not m.training for m in part.bn_layers(model)) and len(part.bn_layers(model)) > 4
    opt = build_optimizer(model, cfg.solver)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for p in g["params"]] for g in opt.param_groups]
    assert [(g["lr_mult"], g["weight_decay"]) for g in opt.param_groups] == [
        (0.1, 1e-4),
        (0.1, 0.0),
        (1.0, 1e-4),
        (1.0, 0.0),
    ]
    assert groups[2:] == [["head.proj.weight"], ["head.proj.bias"]]
    held = [n for g in groups for n in g]
    assert not set(held) & set(frozen) and sorted(held + frozen) == sorted(names.values())
    dims = {n: p.ndim for n, p in model.named_parameters()}
    assert all(dims[n] > 1 for n in groups[0]) and all(dims[n] == 1 for n in groups[1])  # 1-d: BN, biases
    # equal multipliers: the two groups checkpoints written before the multipliers hold
    assert (
        len(build_optimizer(model, load_config(None, [*TINY, "solver.zero_wd_1d_param=true"]).solver).param_groups) == 2
    )


def test_every_group_follows_warmup_and_cosine_times_its_multiplier():
    cfg, model = _tiny(
        "solver.backbone_lr_mult=0.1",
        "solver.head_lr_mult=3",
        "solver.base_lr=0.2",
        "solver.max_epoch=4",
        "solver.warmup_epochs=1",
        "solver.warmup_start_lr=0.01",
        "solver.cosine_end_lr=0.001",
    )
    opt = build_optimizer(model, cfg.solver)
    sched = build_scheduler(opt, cfg.solver, updates_per_epoch=3)
    for update in range(12):
        want = lr_at_epoch(cfg.solver, update / 3)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([want * 0.1, want * 3], rel=1e-12)
        assert schedule_lr(opt) == pytest.approx(want, rel=1e-12)  # what logs and metrics show
        opt.step()
        sched.step()


def test_resume_with_four_groups_is_exact_and_a_changed_layout_is_one_line(tmp_path):
    over = ("train.freeze=[stem]", "solver.backbone_lr_mult=0.5", "solver.warmup_epochs=1", "model.dropout=0")

    def state(*extra):
        cfg, model = _tiny(*over, *extra)
        freeze_stages(model, cfg.train.freeze)
        opt = build_optimizer(model, cfg.solver)
        return TrainState(model, opt, build_scheduler(opt, cfg.solver, 2), torch.amp.GradScaler("cpu", enabled=False))

    ref = state()
    for seed in range(3):
        _step(ref.model, ref.optimizer, ref.scheduler, seed)
    path = str(tmp_path / "ckpt.pyth")
    ref.epoch, ref.step = 1, 3
    ck.save_checkpoint(path, ref.checkpoint({}, []))
    resumed = state()
    resumed.restore(ck.load_checkpoint(path), path)
    for seed in (3, 4):
        _step(ref.model, ref.optimizer, ref.scheduler, seed)
        _step(resumed.model, resumed.optimizer, resumed.scheduler, seed)
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match=r"parameter groups of sizes \[\d+, 2\], this config makes \[\d+\]"):
        state("solver.backbone_lr_mult=1").restore(ck.load_checkpoint(path), path)


# ----------------------------------------------------------------------------- a real fine-tuning
def _folder_per_class(root: str, dst: str, labels) -> str:
    """The ``labels`` videos of the synthetic set copied into ``dst/<split>/<label>/``."""
    for split in ("train", "val"):
        names = os.listdir(os.path.join(root, split))
        with open(os.path.join(root, f"{split}.csv"), newline="") as f:
            for r in csv.DictReader(f):
                if r["label"] in labels:
                    stem = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
                    os.makedirs(os.path.join(dst, split, r["label"]), exist_ok=True)
                    name = next(n for n in names if n.startswith(stem))
                    shutil.copy(os.path.join(root, split, name), os.path.join(dst, split, r["label"], name))
    return dst


@pytest.mark.slow
def test_finetune_to_fewer_classes_keeps_frozen_stages_bit_identical(synthetic_root, tmp_path):
    src_out = str(tmp_path / "source")  # 1 epoch on the 8 classes, no validation
    train(load_config(CFG, small_overrides(synthetic_root, src_out, "solver.max_epoch=1", "train.eval_period=0")))
    src_path = ck.epoch_checkpoint_path(src_out, 1)
    source = ck.load_checkpoint(src_path)["model_state"]

    target = _folder_per_class(synthetic_root, str(tmp_path / "target"), TARGET)
    out = str(tmp_path / "finetune")
    overrides = small_overrides(
        target,
        out,
        "model.num_classes=3",
        "data.train_split=train",
        "data.val_split=val",
        "data.classes_file=",
        f"train.checkpoint_file={src_path}",
        "train.freeze=[stem,res2]",
        "solver.backbone_lr_mult=0.5",
        "solver.max_epoch=2",
        "train.batch_size=3",
        "train.eval_period=1",  # validation and precise BN after epoch 1, then epoch 2 trains again
    )
    result = train(load_config(CFG, overrides))
    final = result.model.state_dict()
    log = open(os.path.join(out, "train.log")).read()
    assert "re-initialising the classifier head" in log and "frozen stages: stem, res2 (" in log
    assert final["head.proj.weight"].shape == (3, result.model.feature_dim) and final["head.proj.bias"].shape == (3,)
    assert result.history[0]["val_top1"] >= 0 and len(result.history) == 2
    frozen = [k for k in source if k.split(".")[0] in ("stem", "res2")]
    buffers = [k for k in frozen if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(buffers) >= 3 * 5 and any(".cbam." in k for k in frozen)  # stem + res2's BN, res2's CBAM
    for key in frozen:
        assert torch.equal(final[key], source[key]), f"frozen {key} changed"
    trained = [k for k, v in final.items() if k.split(".")[0] in ("res3", "res4", "res5") and v.is_floating_point()]
    unchanged = [k for k in trained if torch.equal(final[k], source[k])]
    assert not unchanged, f"{len(unchanged)} of {len(trained)} unfrozen tensors did not change: {unchanged[:5]}"
