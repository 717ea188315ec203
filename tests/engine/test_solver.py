"""LR schedule values and optimiser parameter groups (videoattn/train/solver.py)."""

import math

import pytest
import torch
from torch import nn

from videoattn.config import load_config
from videoattn.train.solver import build_optimizer, build_scheduler, lr_at_epoch


def _cfg(*overrides):
    return load_config(None, ["solver.base_lr=0.4", "solver.max_epoch=10", *overrides])


def _run_schedule(cfg, updates_per_epoch, n):
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, cfg.solver)
    sched = build_scheduler(opt, cfg.solver, updates_per_epoch)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_without_warmup_matches_torch_cosine_annealing():
    cfg = _cfg("solver.lr_policy=cosine", "solver.cosine_end_lr=0.001", "solver.warmup_epochs=0")
    ours = _run_schedule(cfg, updates_per_epoch=7, n=70)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=70, eta_min=0.001)
    ref = []
    for _ in range(70):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        ref_sched.step()
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_steps_without_warmup_matches_torch_multistep():
    cfg = _cfg("solver.lr_policy=steps", "solver.steps=[3,7]", "solver.gamma=0.1", "solver.warmup_epochs=0")
    ours = _run_schedule(cfg, updates_per_epoch=5, n=50)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4)
    ref_sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[15, 35], gamma=0.1)
    ref = []
    for _ in range(50):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        ref_sched.step()
    assert ours == pytest.approx(ref, rel=1e-9)


def test_linear_warmup_values_per_iteration():
    # PySlowFast: lr(e) = start + (policy(warmup) - start) * e / warmup for e < warmup.
    cfg = _cfg("solver.lr_policy=cosine", "solver.warmup_epochs=2", "solver.warmup_start_lr=0.04")
    at_end = 0.4 * (1 + math.cos(math.pi * 2 / 10)) / 2
    lrs = _run_schedule(cfg, updates_per_epoch=4, n=12)
    assert lrs[0] == pytest.approx(0.04)
    assert lrs[1] == pytest.approx(0.04 + (at_end - 0.04) * 0.25 / 2)  # epoch 0.25
    assert lrs[4] == pytest.approx(0.04 + (at_end - 0.04) * 1.0 / 2)  # epoch 1.0
    assert lrs[8] == pytest.approx(at_end)  # epoch 2: warm-up over
    assert lrs[11] == pytest.approx(0.4 * (1 + math.cos(math.pi * 2.75 / 10)) / 2)
    assert all(a < b for a, b in zip(lrs[:8], lrs[1:9]))  # rises during warm-up
    steps = _cfg("solver.lr_policy=steps", "solver.steps=[1]", "solver.warmup_epochs=2", "solver.warmup_start_lr=0.0")
    assert lr_at_epoch(steps.solver, 1.0) == pytest.approx(0.04 * 0.5)  # towards 0.4*0.1 at epoch 2


def test_scheduler_state_round_trip_continues_the_schedule():
    cfg = _cfg("solver.warmup_epochs=1", "solver.warmup_start_lr=0.01")
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, cfg.solver)
    sched = build_scheduler(opt, cfg.solver, 6)
    for _ in range(9):
        opt.step()
        sched.step()
    opt2 = build_optimizer(model, cfg.solver)
    sched2 = build_scheduler(opt2, cfg.solver, 6)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(5):
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at_epoch(cfg.solver, 14 / 6))


def test_unknown_policy_is_an_error():
    cfg = _cfg()
    cfg.solver.lr_policy = "linear"  # set after load_config, which rejects it already
    with pytest.raises(ValueError, match="lr_policy"):
        build_scheduler(build_optimizer(nn.Linear(2, 2), cfg.solver), cfg.solver, 3)


@pytest.mark.parametrize("exclude", [True, False])
def test_weight_decay_groups(exclude):
    model = nn.Sequential(nn.Conv3d(3, 4, 3, bias=True), nn.BatchNorm3d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 3, 4, 4))
    cfg = _cfg(
        "solver.weight_decay=0.5",
        f"solver.zero_wd_1d_param={str(exclude).lower()}",
        "solver.momentum=0.0",
        "solver.base_lr=0.1",
    )
    opt = build_optimizer(model, cfg.solver)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradient: only weight decay moves parameters, by lr * wd * p
    for n, p in model.named_parameters():
        decays = p.ndim > 1 or not exclude
        expected = before[n] * (1 - 0.1 * 0.5) if decays else before[n]
        assert torch.allclose(p, expected), n


def test_sgd_momentum_nesterov_settings():
    cfg = _cfg("solver.momentum=0.8", "solver.nesterov=true", "solver.weight_decay=0.001")
    group = build_optimizer(nn.Linear(2, 2), cfg.solver).param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.8, True, 0.001)
