"""Collectives (GPU issue, first suspect): NCCL reduces only tensors on the GPU, so a CPU tensor handed
to ``all_reduce`` crashes every multi-GPU run, while gloo (the CPU tests) accepts anything. Three checks:
every collective call lives in ``videoattn/utils/distributed.py``; its ``all_reduce_`` sends a CPU
tensor through the device under NCCL; and a real 2-rank run hands only run-device tensors to them."""

import ast
import glob
import json
import os

import pytest
import torch
import torch.distributed as dist
from ddp_worker import small_overrides
from evalkit import check, run

from videoattn.utils import distributed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIVES = {
    "all_reduce",
    "all_gather",
    "all_gather_object",
    "all_gather_into_tensor",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter",
    "all_to_all",
    "gather",
    "scatter",
    "barrier",
}


def _collective_calls(path):
    """``(line, name)`` of calls like ``dist.all_reduce(...)`` / ``torch.distributed.barrier()``."""
    calls = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVES:
            owner = ast.unparse(node.func.value)
            if owner in ("dist", "torch.distributed"):
                calls.append((node.lineno, node.func.attr))
    return calls


def test_collectives_are_called_only_by_the_distributed_helpers():
    helpers = os.path.join(REPO, "videoattn", "utils", "distributed.py")
    stray = [
        f"{os.path.relpath(p, REPO)}:{line}: {name}"
        for p in glob.glob(os.path.join(REPO, "videoattn", "**", "*.py"), recursive=True)
        if p != helpers
        for line, name in _collective_calls(p)
    ]
    assert not stray, stray
    assert _collective_calls(helpers)  # the checker finds them where they are


def test_all_reduce_of_a_cpu_tensor_under_nccl_goes_through_the_device(monkeypatch):
    """A fault injected: the backend says NCCL; the tensor handed to ``dist.all_reduce`` must be the
    device copy (``Tensor.cuda``, recorded here), never the CPU tensor itself."""
    moved, handed = [], []

    def to_device(self, *args, **kwargs):
        copy = self.clone()
        moved.append(copy)
        return copy

    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")
    monkeypatch.setattr(torch.Tensor, "cuda", to_device)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: handed.append(t) or t.mul_(2))
    t = torch.ones(3)
    distributed.all_reduce_(t)
    assert handed and handed[0] is moved[0] and handed[0] is not t
    assert torch.equal(t, torch.full((3,), 2.0))  # the result came back


@pytest.mark.slow
def test_a_real_run_hands_collectives_only_run_device_tensors(synthetic_root, tmp_path):
    """2 gloo ranks: training (updates, log windows, epoch sums, precise BN, validation), then test_net.
    On CPU the run device is the CPU; on a multi-GPU machine the same check is the NCCL one."""
    prefix = str(tmp_path / "seen")
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "collective_worker.py")
    cfg = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
    out = str(tmp_path / "out")
    check(
        run(
            [
                worker,
                prefix,
                "tools/train_net.py",
                "--config",
                cfg,
                *small_overrides(synthetic_root, out, "solver.max_epoch=1", "device=cpu"),
            ],
            nproc=2,
        )
    )
    seen = [json.load(open(f"{prefix}.{rank}.json")) for rank in (0, 1)]
    ops = {op for part in seen for op, _ in part}
    assert {"all_reduce"} <= ops and all(len(part) >= 4 for part in seen), [len(p) for p in seen]  # 3 updates + epoch
    assert {device for part in seen for _, device in part} == {"cpu"}
