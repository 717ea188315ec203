"""Non-local block: the explicit-matrix and SDPA softmax paths against the explicit reference, the
per-device path rule, and the dot-product sum over M in fp16/bf16 (no overflow)."""

import pytest
import torch
from nl_reference import explicit_nonlocal, randomize_bn

from videoattn.models.nonlocal_block import CPU_EXPLICIT_MAX_ELEMENTS, NonLocal3d, attention_path

SOFTMAX = ("embedded_gaussian", "gaussian")


def _block(inst, subsample=(1, 2, 2), path="auto", dim=16, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(NonLocal3d(dim, dim // 2, inst, subsample, path=path), seed)


def _ran_sdpa(fn) -> bool:
    """Whether ``fn()`` called ``scaled_dot_product_attention`` (the profiler's own record)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any("scaled_dot_product" in e.name for e in prof.events())


@pytest.mark.parametrize("path", ["sdpa", "explicit", "auto"])
@pytest.mark.parametrize("inst", SOFTMAX)
@pytest.mark.parametrize("subsample", [(1, 1, 1), (1, 2, 2)])
def test_each_path_matches_explicit_reference(path, inst, subsample):
    block = _block(inst, subsample, path)
    x = torch.randn(2, 16, 4, 6, 6)
    with torch.no_grad():
        ref, _ = explicit_nonlocal(block.eval(), x)
        assert (block(x) - ref).abs().max().item() < 1e-4  # eval: folded-BN output path
    block.train()
    ref, _ = explicit_nonlocal(block, x, bn_batch_stats=True)
    xg = x.clone().requires_grad_(True)
    out = block(xg)  # train: grad enabled
    assert (out - ref).abs().max().item() < 1e-4
    assert (out - x).abs().max().item() > 1e-2


@pytest.mark.parametrize("path", ["sdpa", "explicit"])
@pytest.mark.parametrize("inst", SOFTMAX)
def test_each_path_has_the_reference_gradients(path, inst):
    block = _block(inst, (1, 2, 2), path).eval()  # BN on running statistics: gradients of O(1..100)
    x, w = torch.randn(2, 16, 4, 6, 6), torch.randn(2, 16, 4, 6, 6)  # loss: a fixed random projection
    grads = {}
    for name, fn in (("block", block), ("reference", lambda t: explicit_nonlocal(block, t)[0])):
        block.zero_grad()
        xg = x.clone().requires_grad_(True)
        (fn(xg) * w).sum().backward()
        grads[name] = [xg.grad] + [p.grad.clone() for p in block.parameters()]
    for a, b in zip(grads["block"], grads["reference"]):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_path_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # CPU backward with head dim 512 (C = 1024): explicit; 256 (C = 512): SDPA
    assert attention_path(cpu, 1, 6272, 1568, 512, training=True) == "explicit"
    assert attention_path(cpu, 1, 6272, 6272, 512, training=True) == "explicit"  # 39M elements fit
    assert attention_path(cpu, 1, 6272, 1568, 256, training=True) == "sdpa"
    assert attention_path(cpu, 1, 6272, 1568, 512, training=False) == "sdpa"  # inference
    assert attention_path(cuda, 1, 6272, 1568, 512, training=True) == "sdpa"  # accelerators
    fits = CPU_EXPLICIT_MAX_ELEMENTS // (6272 * 1568)  # largest batch that fits
    assert attention_path(cpu, fits, 6272, 1568, 512, training=True) == "explicit"
    assert attention_path(cpu, fits + 1, 6272, 1568, 512, training=True) == "sdpa"


def test_auto_path_takes_explicit_for_wide_heads_in_cpu_training_only():
    wide = _block("embedded_gaussian", (1, 2, 2), dim=1024)  # inter = head dim 512
    x = torch.randn(1, 1024, 2, 4, 4, requires_grad=True)
    assert not _ran_sdpa(lambda: wide.train()(x).sum().backward())
    with torch.no_grad():
        assert _ran_sdpa(lambda: wide(x))
    narrow = _block("embedded_gaussian", (1, 2, 2)).train()  # head dim 8
    assert _ran_sdpa(lambda: narrow(torch.randn(1, 16, 4, 6, 6, requires_grad=True)).sum().backward())
    assert not _ran_sdpa(lambda: _block("embedded_gaussian", path="explicit")(x[:, :16]).sum())


def test_training_block_compiles_without_graph_breaks():
    block = _block("embedded_gaussian", (1, 2, 2), dim=1024).train()
    explained = torch._dynamo.explain(block)(torch.randn(1, 1024, 2, 4, 4, requires_grad=True))
    assert explained.graph_break_count == 0, explained.break_reasons


def test_unknown_path_is_rejected():
    with pytest.raises(ValueError, match="explicit"):
        NonLocal3d(8, 4, path="fast")


def _large_dot_product_block():
    """dot_product block whose phi/g embeddings reach ~30-40 (on positive inputs, k^T v over M = 144
    positions sums to ~1e5 > fp16's 65504) while theta is small, so the true output stays in fp16 range."""
    block = _block("dot_product", (1, 1, 1)).eval()
    with torch.no_grad():
        for conv, scale in ((block.phi, 16.0), (block.g, 16.0), (block.theta, 0.02)):
            conv.weight.mul_(scale)
    return block


def test_dot_product_sum_over_positions_does_not_overflow_fp16():
    block = _large_dot_product_block()
    x = torch.rand(1, 16, 4, 6, 6) + 1.0
    with torch.no_grad():
        ref, _ = explicit_nonlocal(block, x)  # float32 reference
        k, v, _ = block._keys(x.half().float())
        old = k.half().transpose(1, 2) @ v.half()  # the old formula's fp16 sum over M
        assert not torch.isfinite(old).all(), "test input too small to overflow the old formula"
        out = block.half()(x.half()).float()
    assert torch.isfinite(out).all()
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-2


def test_dot_product_under_bf16_autocast_matches_float32():
    block = _large_dot_product_block()
    x = torch.rand(1, 16, 4, 6, 6) + 1.0
    with torch.no_grad():
        ref, _ = explicit_nonlocal(block, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(x).float()
    assert torch.isfinite(out).all()
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 2e-2
