"""Spacetime non-local block: SDPA/associative paths vs the explicit matrix, identity at init,
genuinely non-local once trained, and cheap query-row capture."""

import pytest
import torch
from nl_reference import explicit_nonlocal, randomize_bn

from videoattn.models.nonlocal_block import INSTANTIATIONS, NonLocal3d


def _block(inst, subsample=(1, 2, 2), seed=0, dim=16):
    torch.manual_seed(seed)
    block = NonLocal3d(dim, dim // 2, inst, subsample)
    if inst == "concatenation":  # a positive bias keeps a good share of the pairs above the ReLU
        torch.nn.init.constant_(block.concat_project.bias, 0.5)
    return randomize_bn(block, seed).eval()


@pytest.mark.parametrize("inst", INSTANTIATIONS)
@pytest.mark.parametrize("subsample", [(1, 1, 1), (1, 2, 2), (2, 2, 2)])
def test_matches_explicit_matrix(inst, subsample):
    block = _block(inst, subsample)
    x = torch.randn(2, 16, 4, 6, 6)
    with torch.no_grad():
        fast = block(x)
        ref, _ = explicit_nonlocal(block, x)
    assert fast.shape == x.shape
    assert (fast - ref).abs().max().item() < 1e-4
    assert (fast - x).abs().max().item() > 1e-2  # the attention term is really there


@pytest.mark.parametrize("inst", INSTANTIATIONS)
def test_train_mode_matches_explicit_matrix(inst):
    block = _block(inst).train()  # BN on batch statistics: the unfused output path
    x = torch.randn(2, 16, 4, 6, 6)
    ref, _ = explicit_nonlocal(block, x, bn_batch_stats=True)
    assert (block(x) - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("inst", INSTANTIATIONS)
def test_identity_at_init(inst):
    torch.manual_seed(0)
    block = NonLocal3d(16, 8, inst)
    x = torch.randn(2, 16, 4, 6, 6)
    block.train()
    assert torch.equal(block(x), x)
    assert torch.equal(block.eval()(x), x)
    assert torch.equal(block.bn.weight.detach(), torch.zeros(16))


@pytest.mark.parametrize("inst", INSTANTIATIONS)
def test_perturbing_one_position_changes_every_other_position(inst):
    block = _block(inst)
    x = torch.randn(1, 16, 4, 6, 6)
    x2 = x.clone()
    x2[:, :, 1, 2, 3] += 3.0 * torch.randn(16)
    with torch.no_grad():
        delta = (block(x2) - block(x)).abs().sum(dim=1)[0]  # (T, H, W)
    delta[1, 2, 3] = float("inf")
    # a 1x1x1-conv network would only change the perturbed position; here every position moves
    assert (delta > 1e-6).all(), f"unchanged positions: {(delta <= 1e-6).nonzero().tolist()[:5]}"


@pytest.mark.parametrize("inst", INSTANTIATIONS)
def test_attention_rows_equal_explicit_rows(inst):
    block = _block(inst, subsample=(1, 2, 2))
    x = torch.randn(2, 16, 4, 6, 6)
    queries = [(0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.99, 0.2, 0.7)]
    with torch.no_grad():
        rows = block.attention(x, queries)
        _, f = explicit_nonlocal(block, x)
    assert rows.shape == (2, 3, 4, 3, 3)
    for qi, (t, y, xx) in enumerate(queries):
        n = (int(t * 4) * 6 + int(y * 6)) * 6 + int(xx * 6)
        assert (rows[:, qi].flatten(1) - f[:, n]).abs().max().item() < 1e-5
    if inst in ("embedded_gaussian", "gaussian"):
        assert torch.allclose(rows.flatten(2).sum(-1), torch.ones(2, 3), atol=1e-5)


def test_gradients_match_explicit():
    block = _block("embedded_gaussian")
    x = torch.randn(1, 16, 4, 6, 6, requires_grad=True)
    block(x).square().sum().backward()
    g_fast = {n: p.grad.clone() for n, p in block.named_parameters()}
    gx = x.grad.clone()
    block.zero_grad()
    x.grad = None
    explicit_nonlocal(block, x)[0].square().sum().backward()
    for n, p in block.named_parameters():
        assert torch.allclose(g_fast[n], p.grad, atol=1e-4, rtol=1e-4), n
    assert torch.allclose(gx, x.grad, atol=1e-4, rtol=1e-4)


def test_unknown_instantiation_is_rejected():
    with pytest.raises(ValueError, match="embedded_gaussian"):
        NonLocal3d(8, 4, "softmaxx")
