"""``model.non_local.attention``: local, axial and linear against full attention or against
references written here from their definitions (docs/model.md#attention-kinds); one state_dict
for every kind; the build-time refusals."""

import math

import pytest
import torch
import torch.nn.functional as F
from nl_reference import randomize_bn

from videoattn.config import load_config
from videoattn.models import build_model
from videoattn.models.nonlocal_block import NonLocal3d
from videoattn.models.resnet3d import ResNet3D
from videoattn.utils.errors import UsageError

KINDS = ("full", "local", "axial", "linear")
PATHS = ("sdpa", "explicit")
# bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operation); the projections,
# logits, softmax and the aggregation each round, and the aggregated values measured 0.35-0.7% of
# their largest magnitude away from float32 (3 seeds, every kind and path): 3% keeps a 4x margin
# and still catches a wrong kernel (those differ by O(100%), see the float32 cases).
BF16_TOL = 3e-2


def _block(kind, subsample=(1, 2, 2), window=(8, 14, 14), inst="embedded_gaussian", path="auto", dim=16, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(NonLocal3d(dim, dim // 2, inst, subsample, path, attention=kind, window=window), seed).eval()


def _y(block, x):
    """The aggregated values (B, N, e) the kind computes, before the output conv."""
    with torch.no_grad():
        return block.attend(x)


def _full_of(block, x):
    """The same weights, full attention (the reference for the exactness cases)."""
    full = NonLocal3d(block.dim, block.inter_dim, block.instantiation, block.subsample, "explicit")
    full.load_state_dict(block.state_dict())
    return _y(full, x)


def _close(a, b, tol=1e-5):
    return (a - b).abs().max().item() <= tol * max(b.abs().max().item(), 1.0)


# ---------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("inst", ["embedded_gaussian", "gaussian"])
@pytest.mark.parametrize("subsample, window", [((1, 1, 1), (4, 6, 6)), ((1, 2, 2), (64, 64, 64))])
def test_local_window_covering_the_map_equals_full(path, inst, subsample, window):
    block, x = _block("local", subsample, window, inst, path), torch.randn(2, 16, 4, 6, 6)
    assert _close(_y(block, x), _full_of(block, x))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(7, 1, 1), (1, 7, 1), (1, 1, 7)], ids=["T", "H", "W"])
def test_axial_on_one_nontrivial_axis_equals_full(path, shape):
    block, x = _block("axial", (1, 1, 1), path=path), torch.randn(2, 16, *shape)
    assert _close(_y(block, x), _full_of(block, x))
    if shape == (1, 1, 7):  # the W' step is the one that takes full-resolution queries to pooled keys
        block, x = _block("axial", (1, 1, 2), path=path), torch.randn(2, 16, 1, 1, 8)
        assert _close(_y(block, x), _full_of(block, x))


def _naive_linear_y(block, x):
    """Efficient Attention from its definition, in float64: softmax over channels of each query,
    softmax over positions of each key channel, y = q_soft (k_soft^T v): (B, N, e)."""
    b = {n: t.double() for n, t in block.state_dict().items()}
    x = x.double()
    xp = F.max_pool3d(x, block.subsample, block.subsample) if block.pool is not None else x
    q = F.conv3d(x, b["theta.weight"], b["theta.bias"]).flatten(2)  # (B, d, N)
    k = F.conv3d(xp, b["phi.weight"], b["phi.bias"]).flatten(2)  # (B, d, M)
    v = F.conv3d(xp, b["g.weight"], b["g.bias"]).flatten(2)  # (B, e, M)
    return torch.einsum("bdn,bdm,bem->bne", torch.softmax(q, 1), torch.softmax(k, 2), v)


def _naive_linear(block, x):
    """:func:`_naive_linear_y`, then the output conv + BN, in float64."""
    b = {n: t.double() for n, t in block.state_dict().items()}
    x = x.double()
    y = _naive_linear_y(block, x).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:])
    z = F.conv3d(y, b["out.weight"], b["out.bias"])
    z = F.batch_norm(z, b["bn.running_mean"], b["bn.running_var"], b["bn.weight"], b["bn.bias"], False, 0.0, 1e-5)
    return x + z


@pytest.mark.parametrize("subsample", [(1, 1, 1), (1, 2, 2)])
def test_linear_equals_its_formula_in_float64(subsample):
    block, x = _block("linear", subsample), torch.randn(2, 16, 4, 6, 6)
    with torch.no_grad():
        out, ref = block(x).double(), _naive_linear(block, x)
    assert _close(out, ref, 1e-5) and not _close(out, x.double(), 1e-2)


def test_linear_dot_product_is_full_dot_product():
    block, x = _block("linear", inst="dot_product"), torch.randn(2, 16, 4, 6, 6)
    assert torch.equal(_y(block, x), _full_of(block, x))


# --------------------------------------------------------------------- padding and subsample
def _masked_local(block, x):
    """Brute force: all N x M logits, -inf where the key cell lies outside the query's window."""
    T, H, W = x.shape[2:]
    win = [min(w, math.ceil(n / s) * s) for w, n, s in zip(block.window, (T, H, W), block.subsample)]
    xp = F.max_pool3d(x, block.subsample, block.subsample, ceil_mode=True)
    q, k, v = block._queries(x), block._queries(xp), block._project(block.g, xp)
    if block.instantiation != "gaussian":
        k = block._project(block.phi, xp)
    qpos = torch.cartesian_prod(*(torch.arange(n) for n in (T, H, W)))  # (N, 3)
    kpos = torch.cartesian_prod(*(torch.arange(n) for n in xp.shape[2:]))  # (M, 3)
    same = (qpos[:, None] // torch.tensor(win)) == (kpos[None] * torch.tensor(block.subsample) // torch.tensor(win))
    logits = (q @ k.transpose(1, 2)) / q.shape[-1] ** 0.5
    return torch.softmax(logits.masked_fill(~same.all(-1), float("-inf")), -1) @ v


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "shape, subsample, window",
    [((5, 7, 6), (1, 2, 2), (2, 4, 4)), ((5, 7, 7), (1, 1, 1), (2, 3, 3)), ((3, 5, 5), (1, 2, 2), (2, 2, 2))],
)
def test_local_padding_equals_brute_force_masked_attention(path, shape, subsample, window):
    block, x = _block("local", subsample, window, path=path), torch.randn(2, 16, *shape)
    with torch.no_grad():
        assert _close(_y(block, x), _masked_local(block, x))


def _axial_reference(block, x):
    """Axial attention from its definition: T' then H' on the (ceil-)pooled grid with pooled
    queries, then W' from every full-resolution query to its key cell's W' line."""
    s, d = block.subsample, block.inter_dim
    xp = F.max_pool3d(x, s, s, ceil_mode=True)
    grid5 = lambda t, g: t.reshape(x.shape[0], *g, t.shape[-1])  # noqa: E731
    q = grid5(block._queries(x), x.shape[2:])
    qp, k = grid5(block._queries(xp), xp.shape[2:]), grid5(block._project(block.phi, xp), xp.shape[2:])
    v = grid5(block._project(block.g, xp), xp.shape[2:])
    a = torch.softmax(torch.einsum("bthwd,bshwd->bthws", qp, k) / d**0.5, -1)
    v = torch.einsum("bthws,bshwe->bthwe", a, v)
    a = torch.softmax(torch.einsum("bthwd,btswd->bthws", qp, k) / d**0.5, -1)
    v = torch.einsum("bthws,btswe->bthwe", a, v)
    ti, hi = torch.arange(x.shape[2]) // s[0], torch.arange(x.shape[3]) // s[1]
    k, v = k[:, ti][:, :, hi], v[:, ti][:, :, hi]  # (B, T, H, W', .)
    a = torch.softmax(torch.einsum("bthwd,bthsd->bthws", q, k) / d**0.5, -1)
    return torch.einsum("bthws,bthse->bthwe", a, v).reshape(x.shape[0], -1, v.shape[-1])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape, subsample", [((4, 6, 6), (1, 2, 2)), ((5, 7, 6), (2, 2, 2)), ((3, 5, 4), (1, 1, 1))])
def test_axial_with_subsample_equals_its_definition(path, shape, subsample):
    block, x = _block("axial", subsample, path=path), torch.randn(2, 16, *shape)
    with torch.no_grad():
        assert _close(_y(block, x), _axial_reference(block, x))


@pytest.mark.parametrize("kind", KINDS)
def test_attention_rows_are_the_weights_the_forward_applies(kind):
    """``attention()`` (the picture's rows) applied to the values gives the forward's output, every query."""
    block, x = _block(kind, (1, 2, 2), (2, 4, 4)), torch.randn(2, 16, 3, 5, 6)
    T, H, W = x.shape[2:]
    queries = [((t + 0.5) / T, (h + 0.5) / H, (w + 0.5) / W) for t in range(T) for h in range(H) for w in range(W)]
    with torch.no_grad():
        rows = block.attention(x, queries).flatten(2)  # (B, N, M)
        _, v, _ = block._keys(x)
        assert torch.allclose(rows.sum(-1), torch.ones(()), atol=1e-5)
        assert _close(rows @ v, _y(block, x))


# ------------------------------------------------------------------- one state_dict, every kind
SUPPORTED = [("local", "gaussian"), ("axial", "gaussian"), ("linear", "dot_product")]


@pytest.mark.parametrize("kind, inst", [(k, "embedded_gaussian") for k in KINDS[1:]] + SUPPORTED)
def test_full_state_dict_loads_strictly_and_a_fresh_block_is_the_identity(kind, inst):
    full = NonLocal3d(16, 8, inst, (1, 2, 2))
    other = NonLocal3d(16, 8, inst, (1, 2, 2), attention=kind, window=(2, 4, 4))
    assert other.load_state_dict(full.state_dict(), strict=True)
    x = torch.randn(2, 16, 3, 5, 6)
    assert torch.equal(other.train()(x), x) and torch.equal(other.eval()(x), x)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_resnet_trains_with_each_kind(kind):
    torch.manual_seed(0)
    net = ResNet3D(18, 4, num_classes=3, nonlocal_locations=[[], [0], [0], []], nonlocal_attention=kind)
    for m in net.modules():
        if isinstance(m, NonLocal3d):
            torch.nn.init.normal_(m.bn.weight)  # not the identity, so every parameter gets a gradient
    net(torch.randn(2, 3, 4, 48, 40)).logsumexp(-1).sum().backward()
    grads = [p.grad for n, p in net.named_parameters() if ".nl." in n]
    assert len(grads) == 20 and all(g is not None and g.abs().sum() > 0 and g.isfinite().all() for g in grads)


def test_config_keys_reach_the_blocks():
    cfg = load_config(None, ["model.preset=I3D_NL_CBAM_R18", "model.non_local.attention=local"])
    assert (cfg.model.non_local.attention, cfg.model.non_local.window) == ("local", None)  # preset-able: unset
    blocks = [m for m in build_model(cfg.model).modules() if isinstance(m, NonLocal3d)]
    assert blocks and all(b.kind == "local" and b.window == (8, 14, 14) for b in blocks)
    over = ["model.non_local.attention=local", "model.non_local.window=[2,4,4]"]
    blocks = [m for m in build_model(load_config(None, ["model.preset=I3D_NL_CBAM_R18"] + over).model).modules()]
    assert [b.window for b in blocks if isinstance(b, NonLocal3d)] == [(2, 4, 4)] * 2


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["model.non_local.attention=axial", "model.non_local.instantiation=concatenation"], "not 'concatenation'"),
        (["model.non_local.attention=linear", "model.non_local.instantiation=gaussian"], "not 'gaussian'"),
        (["model.non_local.attention=local", "model.non_local.instantiation=dot_product"], "not 'dot_product'"),
        (["model.non_local.attention=local", "model.non_local.window=[3,4,4]"], "multiples of"),
    ],
)
def test_unsupported_combinations_are_one_line_at_build_time(overrides, says):
    cfg = load_config(None, ["model.preset=I3D_NL_R50", "model.non_local.subsample=[2,2,2]"] + overrides)
    with pytest.raises(UsageError) as e:
        build_model(cfg.model)
    assert says in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------- the same under bf16 autocast
BF16_CASES = {  # kind's block, input shape, float32 reference of the aggregated values
    "local=full": (lambda p: _block("local", (1, 2, 2), (64, 64, 64), path=p), (4, 6, 6), _full_of),
    "local padded": (lambda p: _block("local", (1, 2, 2), (2, 4, 4), path=p), (4, 7, 6), _masked_local),
    "axial=full": (lambda p: _block("axial", (1, 1, 1), path=p), (1, 1, 7), _full_of),
    "axial subsampled": (lambda p: _block("axial", (1, 2, 2), path=p), (4, 7, 6), _axial_reference),
    "linear": (lambda p: _block("linear", (1, 2, 2), path=p), (4, 7, 6), lambda b, x: _naive_linear_y(b, x).float()),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(BF16_CASES))
def test_bf16_autocast_keeps_each_exactness(case, path):
    make, shape, reference = BF16_CASES[case]
    block, x = make(path), torch.randn(2, 16, *shape)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = block.attend(x)
    with torch.no_grad():
        ref = reference(block, x)
    assert low.dtype == torch.bfloat16 and _close(low.float(), ref, BF16_TOL)
