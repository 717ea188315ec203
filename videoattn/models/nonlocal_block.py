"""Spacetime non-local block (Wang et al., 2018), PySlowFast layout.

``z = x + BN(W_z y)``, ``y_i = sum_j f(x_i, x_j) g(x_j) / C(x)`` over all T x H x W positions j
(optionally max-pooled, e.g. 1x2x2, before phi and g as in PySlowFast). The final BN weight
starts at zero, so a fresh block is the identity.

Instantiations and how they are computed (N queries, M keys, d channels):

* ``embedded_gaussian``: softmax(theta_i . phi_j / sqrt(d)) -- PySlowFast's ``softmax``;
  ``F.scaled_dot_product_attention`` (fused, the N x M matrix is never materialised), or the
  explicit matrix where that is faster and small (see :func:`attention_path`).
* ``gaussian``: softmax(x_i . x_j / sqrt(C)) on the raw features (no theta/phi); same two paths.
* ``dot_product``: theta_i . phi_j / M -- PySlowFast's ``dot_product``; computed as
  theta (phi^T g / M), a d x d product instead of N x M (same numbers by associativity); the
  sum over M is accumulated in float32 even under fp16/bf16 autocast (no overflow).
* ``concatenation``: ReLU(w . [theta_i, phi_j] + b) / M. The ReLU makes it genuinely pairwise:
  computed in query chunks (bounded memory at inference; training keeps the N x M activations).

Which keys a query sees (``attention``, :data:`KINDS`): ``full`` (all of them, the above), ``local``
(its spacetime window), ``axial`` (its T, H and W lines in sequence) or ``linear`` (Efficient
Attention); the kernels and each kind's instantiations are in :mod:`~videoattn.models.attention_kinds`.
The parameters do not depend on the kind, so one state_dict loads into every kind.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from videoattn.models import attention_kinds as kinds
from videoattn.models.attention_kinds import (
    CPU_EXPLICIT_MAX_ELEMENTS,
    CPU_EXPLICIT_MIN_HEAD_DIM,
    KINDS,
    attention_path,
    mean_outer,
)
from videoattn.utils.errors import UsageError

INSTANTIATIONS = ("embedded_gaussian", "dot_product", "gaussian", "concatenation")
ATTENTION_PATHS = ("auto", "sdpa", "explicit")
_CONCAT_CHUNK = 1 << 22  # elements of the (chunk x M) pairwise matrix per step
__all__ = ["NonLocal3d", "attention_path", "CPU_EXPLICIT_MAX_ELEMENTS", "CPU_EXPLICIT_MIN_HEAD_DIM", "KINDS"]


class NonLocal3d(nn.Module):
    """Non-local block. ``x: (B, C, T, H, W) -> (B, C, T, H, W)``.

    Args:
        dim: input channels C.
        inter_dim: embedding channels (C/2 in the paper and PySlowFast).
        instantiation: one of :data:`INSTANTIATIONS`.
        subsample: max-pool kernel = stride (t, h, w) applied to x before phi and g.
        path: softmax-attention path (embedded_gaussian, gaussian): ``"auto"`` (per call, by
            :func:`attention_path`), ``"sdpa"`` or ``"explicit"``; same outputs within 1e-4.
        attention: which keys each query sees, one of :data:`KINDS` (see
            :mod:`~videoattn.models.attention_kinds`); the parameters are the same for every kind.
        window: local attention's (t, h, w) window in input positions, a multiple of ``subsample``.
    """

    def __init__(
        self,
        dim: int,
        inter_dim: int,
        instantiation: str = "embedded_gaussian",
        subsample: Sequence[int] = (1, 2, 2),
        path: str = "auto",
        attention: str = "full",
        window: Sequence[int] = (8, 14, 14),
    ):
        super().__init__()
        if instantiation not in INSTANTIATIONS:
            raise UsageError(
                f"unknown non-local instantiation '{instantiation}'; choose one of {', '.join(INSTANTIATIONS)}"
            )
        if path not in ATTENTION_PATHS:
            raise UsageError(f"unknown non-local path '{path}'; choose one of {', '.join(ATTENTION_PATHS)}")
        subsample = tuple(int(s) for s in subsample)
        kinds.check_kind(attention, instantiation, window, subsample)
        self.instantiation, self.path, self.kind = instantiation, path, attention
        self.subsample, self.window = subsample, tuple(int(w) for w in window)
        self.dim, self.inter_dim = dim, inter_dim
        if instantiation != "gaussian":
            self.theta = nn.Conv3d(dim, inter_dim, 1)
            self.phi = nn.Conv3d(dim, inter_dim, 1)
        self.g = nn.Conv3d(dim, inter_dim, 1)
        if instantiation == "concatenation":
            self.concat_project = nn.Linear(2 * inter_dim, 1)
        self.pool = nn.MaxPool3d(subsample, subsample) if any(s > 1 for s in subsample) else None
        self.out = nn.Conv3d(inter_dim, dim, 1)
        self.bn = nn.BatchNorm3d(dim)
        nn.init.zeros_(self.bn.weight)

    def extra_repr(self) -> str:
        window = f", window={list(self.window)}" if self.kind == "local" else ""
        return f"{self.instantiation}, attention={self.kind}{window}"

    # -- embeddings -------------------------------------------------------------------------
    @staticmethod
    def _project(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        """A 1x1x1 conv as one matmul that yields the token layout directly: ``(B, C, ...) -> (B, L, out)``."""
        return F.linear(x.flatten(2).transpose(1, 2), conv.weight.flatten(1), conv.bias)

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, ...) -> (B, L, d)`` query embedding of every position."""
        if self.instantiation == "gaussian":
            return x.flatten(2).transpose(1, 2)
        return self._project(self.theta, x)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The key grid's input: max-pooled by ``subsample``. local and axial pool with ``ceil_mode``
        (a partial cell at the far end keeps the max of its positions), so every query has its key
        cell; on maps the subsample divides, that is the same grid as full attention's."""
        if self.pool is None:
            return x
        return F.max_pool3d(x, self.subsample, self.subsample, ceil_mode=self.kind in ("local", "axial"))

    def _keys(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int, int]]:
        """``x: (B, C, T, H, W)`` -> keys (B, M, d), values (B, M, inter_dim), key grid (T', H', W')."""
        xp = self._pooled(x)
        k = self._project(self.phi, xp) if self.instantiation != "gaussian" else xp.flatten(2).transpose(1, 2)
        return k, self._project(self.g, xp), tuple(xp.shape[2:])

    def _concat_logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Pairwise ``ReLU(w_q . q_i + w_k . k_j + b) / M``: (B, N, d), (B, M, d) -> (B, N, M)."""
        w = self.concat_project.weight[0]
        a = q @ w[: self.inter_dim]
        b = k @ w[self.inter_dim :] + self.concat_project.bias
        return F.relu(a[:, :, None] + b[:, None, :]) / k.shape[1]

    # -- forward ----------------------------------------------------------------------------
    def softmax_path(self, q: torch.Tensor, k: torch.Tensor) -> str:
        """The path :meth:`aggregate` takes for queries ``q: (B, N, d)`` and keys ``k: (B, M, d)``."""
        return kinds.resolve_path(self.path, q, k)

    def aggregate(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Full attention ``y_i = sum_j f(q_i, k_j) v_j / C``: (B, N, d), (B, M, d), (B, M, e) -> (B, N, e)."""
        if self.instantiation in ("embedded_gaussian", "gaussian"):
            return kinds.softmax_attention(q[:, None], k[:, None], v[:, None], self.path)[:, 0]
        if self.instantiation == "dot_product":
            return q @ mean_outer(k, v).to(q.dtype)
        chunk = max(1, _CONCAT_CHUNK // max(k.shape[1], 1))
        return torch.cat([self._concat_logits(q[:, i : i + chunk], k) @ v for i in range(0, q.shape[1], chunk)], dim=1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """``y`` of every position under :attr:`kind`: ``(B, C, T, H, W) -> (B, THW, inter_dim)``."""
        grid = tuple(x.shape[2:])
        k, v, kgrid = self._keys(x)
        q = self._queries(x)
        if self.kind == "local":
            return kinds.local_attention(q, k, v, grid, kgrid, self.window, self.subsample, self.path)
        if self.kind == "axial":
            qp = self._queries(self._pooled(x)) if self.pool is not None else q
            return kinds.axial_attention(q, qp, k, v, grid, kgrid, self.subsample, self.path)
        if self.kind == "linear" and self.instantiation == "embedded_gaussian":
            return kinds.linear_attention(q, k, v)
        return self.aggregate(q, k, v)  # full; linear dot_product is the same computation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        y = self.attend(x)  # (B, N, e)
        if self.training or self.bn.running_var is None:
            y = F.linear(y, self.out.weight.flatten(1), self.out.bias)  # (B, N, C)
            return x + self.bn(rearrange(y, "b (t h w) c -> b c t h w", t=T, h=H, w=W))
        # Inference: BN with running statistics is affine, so fold it into the output conv and let
        # one batched matmul add the residual (no separate (B, C, THW) temporaries).
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        weight = self.out.weight.flatten(1) * scale[:, None]  # (C, e)
        bias = (self.out.bias - self.bn.running_mean) * scale + self.bn.bias  # (C,)
        z = torch.baddbmm(x.flatten(2), weight.expand(B, -1, -1), y.transpose(1, 2))
        return z.add_(bias[:, None]).view(B, C, T, H, W)

    # -- attention capture ------------------------------------------------------------------
    def attention(self, x: torch.Tensor, queries: Sequence[Tuple[float, float, float]]) -> torch.Tensor:
        """Attention weights of chosen query positions over all key positions.

        Only the Q requested rows are computed (never the full matrix). local: zero outside the
        query's window; axial and linear: the effective weights (the rows of the N x M matrix that
        the kind applies to the values, see :mod:`~videoattn.models.attention_kinds`).

        Args:
            x: the block's input ``(B, C, T, H, W)``.
            queries: ``[(t, y, x), ...]`` fractional coordinates in [0, 1].
        Returns:
            ``(B, Q, T', H', W')`` over the (subsampled) key grid; rows sum to 1 for the softmax
            instantiations and linear embedded_gaussian, and are the raw normalised affinities ``f / M`` otherwise.
        """
        B, C, T, H, W = x.shape
        cells = torch.tensor(
            [[min(int(float(c) * n), n - 1) for c, n in zip(qpos, (T, H, W))] for qpos in queries], device=x.device
        )  # (Q, 3)
        xq = x[:, :, cells[:, 0], cells[:, 1], cells[:, 2]]  # (B, C, Q)
        if self.instantiation != "gaussian":
            w = self.theta.weight.flatten(1)  # (d, C)
            q = torch.einsum("dc,bcq->bqd", w, xq) + self.theta.bias
        else:
            q = xq.transpose(1, 2)
        k, _, grid = self._keys(x)
        weights = self._weights(x, q, k, cells)
        return rearrange(weights, "b q (t h w) -> b q t h w", t=grid[0], h=grid[1], w=grid[2])

    def _weights(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Rows of the chosen queries ``q: (B, Q, d)`` (grid cells ``(Q, 3)``) over the keys ``k`` -> (B, Q, M)."""
        if self.kind == "local":
            return kinds.local_weights(q, k, cells, self.window, self.subsample, tuple(x.shape[2:]))
        if self.kind == "axial":
            qp = self._queries(self._pooled(x)) if self.pool is not None else self._queries(x)
            kgrid = tuple(-(-n // s) for n, s in zip(x.shape[2:], self.subsample))
            return kinds.axial_weights(q, qp, k, cells, kgrid, self.subsample)
        if self.kind == "linear" and self.instantiation == "embedded_gaussian":
            return kinds.linear_weights(q, k)
        if self.instantiation in ("embedded_gaussian", "gaussian"):
            return torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        if self.instantiation == "dot_product":
            return q @ k.transpose(1, 2) / k.shape[1]
        return self._concat_logits(q, k)
