"""The attention kernels behind :class:`~videoattn.models.nonlocal_block.NonLocal3d` (``model.non_local.attention``).

Every kind takes the block's own embeddings -- queries ``q`` (theta, or the raw features for
``gaussian``) on the input grid ``(T, H, W)``, keys ``k`` (phi) and values ``v`` (g) on the
max-pooled key grid ``(T', H', W')`` -- so one state_dict serves all kinds. Costs for N = THW
queries, M = T'H'W' keys, head dim d:

* ``full``: softmax over all M keys, O(N M d) (:func:`softmax_attention`, SDPA or explicit).
* ``local``: softmax inside non-overlapping spacetime windows (:func:`local_attention`),
  O(N m d) with m keys per window.
* ``axial``: softmax along T', then H', then W' applied in sequence on the values
  (:func:`axial_attention`), O(N (T' + H' + W') d).
* ``linear``: Efficient Attention (Shen et al., WACV 2021), O(N d^2) (:func:`linear_attention`).

Local and axial batch their windows / axis lines into SDPA's batch and head dimensions and take
the same per-call path rule as full attention (:func:`attention_path`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange

from videoattn.utils.errors import UsageError

Grid = Tuple[int, int, int]
KINDS = ("full", "local", "axial", "linear")
# Instantiations each kind computes. local/axial are softmax attentions over a subset of the keys;
# linear replaces the softmax over keys by Efficient Attention's two softmaxes (embedded_gaussian)
# and dot_product is already linear (theta (phi^T g) / M, the same numbers as under full);
# concatenation's ReLU over [theta_i, phi_j] is genuinely pairwise: full only.
SUPPORTED = {
    "full": ("embedded_gaussian", "dot_product", "gaussian", "concatenation"),
    "local": ("embedded_gaussian", "gaussian"),
    "axial": ("embedded_gaussian", "gaussian"),
    "linear": ("embedded_gaussian", "dot_product"),
}
# CPU rule, from whole-block forward+backward timings at 8x28x28 (docs/benchmarks.md, non-local):
# SDPA was faster with head dim 256 (C = 512) and in inference, the explicit matrix with head dim 512
# (C = 1024) in training. The explicit path keeps B x N x M matrices for the backward, so it is taken
# only while one float32 matrix stays under 256 MiB.
CPU_EXPLICIT_MIN_HEAD_DIM = 512
CPU_EXPLICIT_MAX_ELEMENTS = 1 << 26  # B * N * M


def check_kind(kind: str, instantiation: str, window: Sequence[int], subsample: Sequence[int]) -> None:
    """Raise one :class:`UsageError` line for a kind / instantiation / window this module cannot compute."""
    if kind not in KINDS:
        raise UsageError(f"unknown model.non_local.attention '{kind}'; choose one of {', '.join(KINDS)}")
    if instantiation not in SUPPORTED[kind]:
        raise UsageError(
            f"model.non_local.attention={kind} computes instantiation {' | '.join(SUPPORTED[kind])}, "
            f"not '{instantiation}' (full computes all four)"
        )
    if kind == "local" and (len(window) != 3 or any(int(w) < 1 or int(w) % int(s) for w, s in zip(window, subsample))):
        raise UsageError(
            f"model.non_local.window {list(window)} must be 3 multiples of model.non_local.subsample "
            f"{list(subsample)} (per axis), so each query window pools to a whole key window"
        )


def attention_path(device: torch.device, batch: int, queries: int, keys: int, head_dim: int, training: bool) -> str:
    """The faster exact softmax-attention path: ``"explicit"`` (softmax(q k^T) v with the
    (B, N, M) matrix) or ``"sdpa"`` (``F.scaled_dot_product_attention``, never builds it).

    CUDA (and any other accelerator): always SDPA (fused flash / memory-efficient kernels).
    CPU: explicit only for a backward pass (``training``) with ``head_dim >= CPU_EXPLICIT_MIN_HEAD_DIM``
    and ``batch * queries * keys <= CPU_EXPLICIT_MAX_ELEMENTS``; SDPA otherwise.
    """
    if torch.device(device).type != "cpu" or not training:
        return "sdpa"
    fits = batch * queries * keys <= CPU_EXPLICIT_MAX_ELEMENTS
    return "explicit" if head_dim >= CPU_EXPLICIT_MIN_HEAD_DIM and fits else "sdpa"


def resolve_path(path: str, q: torch.Tensor, k: torch.Tensor) -> str:
    """``path`` ("auto" | "sdpa" | "explicit") for ``q: (..., N, d)``, ``k: (..., M, d)``; "auto" by
    :func:`attention_path` with every leading dimension counted as batch."""
    if path != "auto":
        return path
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    # math.prod, not torch.Size.numel(): numel() turns a symbolic batch (torch.export with a dynamic
    # batch dimension) into the example's constant; the product stays symbolic.
    return attention_path(q.device, math.prod(q.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1], grad)


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, path: str, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) [masked]) v``: (B, G, N, d), (B, G, M, d), (B, G, M, e) -> (B, G, N, e).

    ``mask``: bool, broadcastable to (B, G, N, M), False = the key gets zero weight. ``path``: as
    :func:`resolve_path`.
    """
    if resolve_path(path, q, k) == "explicit":  # (B, G, N, M) matrix; scale 1/sqrt(d) as SDPA's
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        return torch.softmax(logits if mask is None else logits.masked_fill(~mask, float("-inf")), dim=-1) @ v
    # Contiguous 4D (B, G, L, E): otherwise SDPA silently falls back to its "math" backend, which
    # materialises the N x M matrix. Default scale 1/sqrt(d).
    q, k, v = (t.contiguous() for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _no_autocast(device: torch.device):
    kind = device.type
    return torch.autocast(kind, enabled=False) if torch.amp.is_autocast_available(kind) else contextlib.nullcontext()


def mean_outer(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``k^T v / M`` accumulated and returned in float32, autocast off: (B, M, d), (B, M, e) -> (B, d, e).

    Under fp16 autocast a sum over thousands of positions overflows fp16's 65504 before the
    division by M; this d x e product is small, so float32 costs nothing measurable.
    """
    with _no_autocast(k.device):
        return torch.matmul(k.transpose(1, 2).float(), v.float()).div_(k.shape[1])


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Efficient Attention, ``softmax_channels(q) (softmax_positions(k)^T v)``:
    (B, N, d), (B, M, d), (B, M, e) -> (B, N, e).

    Each query's channel softmax mixes d global "context" vectors; each is the key-softmax-weighted
    mean of the values over all M positions, accumulated in float32 with autocast off (as
    :func:`mean_outer`). Rows of the effective N x M matrix (:func:`linear_weights`) sum to 1.
    """
    with _no_autocast(k.device):
        context = torch.matmul(torch.softmax(k.float(), dim=1).transpose(1, 2), v.float())  # (B, d, e)
    return torch.softmax(q, dim=-1) @ context.to(q.dtype)


def linear_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The effective weights of :func:`linear_attention`: (B, Q, d), (B, M, d) -> (B, Q, M)."""
    return torch.softmax(q.float(), dim=-1) @ torch.softmax(k.float(), dim=1).transpose(1, 2)


# -- local: non-overlapping windows -------------------------------------------------------------------
def fit_window(window: Sequence[int], grid: Grid, subsample: Sequence[int]) -> Grid:
    """The window used on ``grid``: ``window`` clipped per axis to the grid rounded up to the subsample."""
    return tuple(min(int(w), math.ceil(n / s) * s) for w, n, s in zip(window, grid, subsample))


def _windows(t: torch.Tensor, grid: Grid, win: Grid, counts: Grid) -> torch.Tensor:
    """(B, T*H*W, d) on ``grid`` -> (B, nW, wt*wh*ww, d), zero-padded at the far end of each axis."""
    B, d = t.shape[0], t.shape[-1]
    pad = [n * w - g for n, w, g in zip(counts, win, grid)]
    x = F.pad(t.reshape(B, *grid, d), (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
    return rearrange(x, "b (nt wt) (nh wh) (nw ww) d -> b (nt nh nw) (wt wh ww) d", wt=win[0], wh=win[1], ww=win[2])


def local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: Grid, kgrid: Grid, window: Grid, subsample: Grid, path: str
) -> torch.Tensor:
    """Softmax attention inside non-overlapping windows: (B, N, d), (B, M, d), (B, M, e) -> (B, N, e).

    The query grid ``grid`` is cut into windows of :func:`fit_window` (``window`` clipped to the map);
    the window of query window i is the key cells that pool its positions: ``window / subsample``
    cells of ``kgrid`` (the key grid must be pooled with ``ceil_mode``, ``kgrid = ceil(grid /
    subsample)``, so every query window has keys). Maps that the window does not divide are padded
    at the far end; padded keys are masked (zero weight), padded queries dropped.
    """
    win = fit_window(window, grid, subsample)
    kwin = tuple(w // s for w, s in zip(win, subsample))
    counts = tuple(math.ceil(n / w) for n, w in zip(grid, win))
    qw, kw, vw = _windows(q, grid, win, counts), _windows(k, kgrid, kwin, counts), _windows(v, kgrid, kwin, counts)
    mask = None
    if any(n * w != g for n, w, g in zip(counts, kwin, kgrid)):  # padded keys exist: (1, nW, 1, m)
        real = torch.ones(1, math.prod(kgrid), 1, device=k.device)
        mask = _windows(real, kgrid, kwin, counts)[..., 0][:, :, None, :].bool()
        # expanded to the batch (a view): a batch-1 mask makes SDPA compare 1 with the batch size,
        # which torch.export turns into a fixed batch
        mask = mask.expand(q.shape[0], -1, -1, -1)
    y = softmax_attention(qw, kw, vw, path, mask)  # (B, nW, wt*wh*ww, e)
    y = rearrange(
        y, "b (nt nh nw) (wt wh ww) e -> b (nt wt) (nh wh) (nw ww) e", nt=counts[0], nh=counts[1], wt=win[0], wh=win[1]
    )
    return y[:, : grid[0], : grid[1], : grid[2]].reshape(q.shape[0], -1, y.shape[-1])


def local_weights(q: torch.Tensor, k: torch.Tensor, cells: torch.Tensor, window: Grid, subsample: Grid, grid: Grid):
    """Rows of :func:`local_attention` for chosen queries: (B, Q, d), (B, M, d), query cells (Q, 3) -> (B, Q, M).

    ``cells`` are the queries' (t, y, x) grid positions; keys outside a query's window get weight 0.
    ``k`` must lie on the ceil-pooled grid of ``grid``.
    """
    win = fit_window(window, grid, subsample)
    kgrid = tuple(math.ceil(n / s) for n, s in zip(grid, subsample))
    axes = [torch.arange(n, device=k.device) // (w // s) for n, w, s in zip(kgrid, win, subsample)]
    key_win = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # (M, 3) window of each key
    inside = (key_win[None] == (cells // torch.tensor(win, device=k.device))[:, None]).all(-1)  # (Q, M)
    logits = (q @ k.transpose(1, 2)) * q.shape[-1] ** -0.5
    return torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=-1)


# -- axial: T', then H', then W' ----------------------------------------------------------------------
def _along(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, axis: int, path: str) -> torch.Tensor:
    """Softmax attention along one axis of (B, T, H, W, .) grids, every other axis a batch of lines."""
    q, k, v = (t.movedim(axis, -2) for t in (q, k, v))  # (B, a, b, L, .)
    shape = v.shape[:-2]
    y = softmax_attention(*(t.reshape(-1, 1, *t.shape[-2:]) for t in (q, k, v)), path)
    return y.reshape(*shape, *y.shape[-2:]).movedim(-2, axis)


def _cell_rows(t: torch.Tensor, grid: Grid, subsample: Grid) -> torch.Tensor:
    """(B, T', H', W', .) -> (B, T, H, W', .): for every query row (t, h), its key cell's W' line."""
    for axis, (n, s) in enumerate(zip(grid[:2], subsample[:2])):
        if s > 1:
            t = t.index_select(axis + 1, torch.arange(n, device=t.device) // s)
    return t


def axial_attention(
    q: torch.Tensor,
    qp: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: Grid,
    kgrid: Grid,
    subsample: Grid,
    path: str,
) -> torch.Tensor:
    """Axial attention on the values, T', then H', then W': (B, N, d), (B, M, d) x 3 -> (B, N, e).

    ``qp`` are the queries of the pooled input (theta of the max-pooled x: the same projection),
    on the key grid ``kgrid = ceil(grid / subsample)``. Steps T' and H' mix the values among key
    cells (query cell c attends to the cells on its T' line, then on its H' line); the W' step takes
    each full-resolution query (t, h, w) to the W' line of its key cell (t // st, h // sh). Without
    subsample (qp = q) these are the three axial steps on one grid, O(N (T + H + W) d).
    """
    B, d, e = q.shape[0], q.shape[-1], v.shape[-1]
    qp, k, v = (t.reshape(B, *kgrid, t.shape[-1]) for t in (qp, k, v))
    v = _along(qp, k, v, 1, path)  # T'
    v = _along(qp, k, v, 2, path)  # H'
    rows_k, rows_v = _cell_rows(k, grid, subsample), _cell_rows(v, grid, subsample)  # (B, T, H, W', .)
    y = softmax_attention(
        q.reshape(-1, 1, grid[2], d), rows_k.reshape(-1, 1, kgrid[2], d), rows_v.reshape(-1, 1, kgrid[2], e), path
    )
    return y.reshape(B, -1, e)


def _axis_softmax(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax over the last key axis of ``q . k / sqrt(d)``: (..., d), (..., L, d) -> (..., L)."""
    return torch.softmax((k @ q[..., None])[..., 0] * q.shape[-1] ** -0.5, dim=-1)


def axial_weights(q: torch.Tensor, qp: torch.Tensor, k: torch.Tensor, cells: torch.Tensor, kgrid: Grid, subsample):
    """Effective weights of :func:`axial_attention` for chosen queries: q (B, Q, d), qp and k (B, M, d),
    query cells (Q, 3) -> (B, Q, M); weight of key (t', h', w') = aW(w') aH(h' | w') aT(t' | h', w')."""
    B, d = q.shape[0], q.shape[-1]
    qp, k = qp.reshape(B, *kgrid, d), k.reshape(B, *kgrid, d)
    ct, ch = cells[:, 0] // subsample[0], cells[:, 1] // subsample[1]
    a_w = _axis_softmax(q, k[:, ct, ch])  # (B, Q, W')
    a_h = _axis_softmax(qp[:, ct, ch], k[:, ct].transpose(2, 3))  # (B, Q, W', H')
    a_t = _axis_softmax(qp[:, ct], k.permute(0, 2, 3, 1, 4)[:, None])  # (B, Q, H', W', T')
    return torch.einsum("bqw,bqwh,bqhwt->bqthw", a_w, a_h, a_t).reshape(B, q.shape[1], -1)
