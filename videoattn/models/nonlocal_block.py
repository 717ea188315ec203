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
"""

from __future__ import annotations

import contextlib
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from videoattn.utils.errors import UsageError

INSTANTIATIONS = ("embedded_gaussian", "dot_product", "gaussian", "concatenation")
ATTENTION_PATHS = ("auto", "sdpa", "explicit")
_CONCAT_CHUNK = 1 << 22  # elements of the (chunk x M) pairwise matrix per step
# CPU rule, from whole-block forward+backward timings at 8x28x28 (docs/benchmarks.md, non-local):
# SDPA was faster with head dim 256 (C = 512) and in inference, the explicit matrix with head dim 512
# (C = 1024) in training. The explicit path keeps B x N x M matrices for the backward, so it is taken
# only while one float32 matrix stays under 256 MiB.
CPU_EXPLICIT_MIN_HEAD_DIM = 512
CPU_EXPLICIT_MAX_ELEMENTS = 1 << 26  # B * N * M


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


def _mean_outer(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``k^T v / M`` accumulated and returned in float32, autocast off: (B, M, d), (B, M, e) -> (B, d, e).

    Under fp16 autocast a sum over thousands of positions overflows fp16's 65504 before the
    division by M; this d x e product is small, so float32 costs nothing measurable.
    """
    kind = k.device.type
    with torch.autocast(kind, enabled=False) if torch.amp.is_autocast_available(kind) else contextlib.nullcontext():
        return torch.matmul(k.transpose(1, 2).float(), v.float()).div_(k.shape[1])


class NonLocal3d(nn.Module):
    """Non-local block. ``x: (B, C, T, H, W) -> (B, C, T, H, W)``.

    Args:
        dim: input channels C.
        inter_dim: embedding channels (C/2 in the paper and PySlowFast).
        instantiation: one of :data:`INSTANTIATIONS`.
        subsample: max-pool kernel = stride (t, h, w) applied to x before phi and g.
        path: softmax-attention path (embedded_gaussian, gaussian): ``"auto"`` (per call, by
            :func:`attention_path`), ``"sdpa"`` or ``"explicit"``; same outputs within 1e-4.
    """

    def __init__(
        self,
        dim: int,
        inter_dim: int,
        instantiation: str = "embedded_gaussian",
        subsample: Sequence[int] = (1, 2, 2),
        path: str = "auto",
    ):
        super().__init__()
        if instantiation not in INSTANTIATIONS:
            raise UsageError(
                f"unknown non-local instantiation '{instantiation}'; choose one of {', '.join(INSTANTIATIONS)}"
            )
        if path not in ATTENTION_PATHS:
            raise UsageError(f"unknown non-local path '{path}'; choose one of {', '.join(ATTENTION_PATHS)}")
        self.instantiation, self.path = instantiation, path
        self.dim, self.inter_dim = dim, inter_dim
        if instantiation != "gaussian":
            self.theta = nn.Conv3d(dim, inter_dim, 1)
            self.phi = nn.Conv3d(dim, inter_dim, 1)
        self.g = nn.Conv3d(dim, inter_dim, 1)
        if instantiation == "concatenation":
            self.concat_project = nn.Linear(2 * inter_dim, 1)
        subsample = tuple(int(s) for s in subsample)
        self.pool = nn.MaxPool3d(subsample, subsample) if any(s > 1 for s in subsample) else None
        self.out = nn.Conv3d(inter_dim, dim, 1)
        self.bn = nn.BatchNorm3d(dim)
        nn.init.zeros_(self.bn.weight)

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

    def _keys(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int, int]]:
        """``x: (B, C, T, H, W)`` -> keys (B, M, d), values (B, M, inter_dim), key grid (T', H', W')."""
        xp = self.pool(x) if self.pool is not None else x
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
        if self.path != "auto":
            return self.path
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k))
        return attention_path(q.device, q.shape[0], q.shape[1], k.shape[1], q.shape[2], grad)

    def aggregate(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``y_i = sum_j f(q_i, k_j) v_j / C``: (B, N, d), (B, M, d), (B, M, e) -> (B, N, e)."""
        if self.instantiation in ("embedded_gaussian", "gaussian"):
            if self.softmax_path(q, k) == "explicit":  # (B, N, M) matrix; scale 1/sqrt(d) as SDPA's
                return torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(1, 2), dim=-1) @ v
            # Contiguous 4D (B, heads=1, L, E): otherwise SDPA silently falls back to its "math"
            # backend, which materialises the N x M matrix. Default scale 1/sqrt(d).
            q, k, v = (t[:, None].contiguous() for t in (q, k, v))  # no-ops except for "gaussian"
            return F.scaled_dot_product_attention(q, k, v)[:, 0]
        if self.instantiation == "dot_product":
            return q @ _mean_outer(k, v).to(q.dtype)
        chunk = max(1, _CONCAT_CHUNK // max(k.shape[1], 1))
        return torch.cat([self._concat_logits(q[:, i : i + chunk], k) @ v for i in range(0, q.shape[1], chunk)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        k, v, _ = self._keys(x)
        y = self.aggregate(self._queries(x), k, v)  # (B, N, e)
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

        Only the Q requested rows are computed (never the full matrix).

        Args:
            x: the block's input ``(B, C, T, H, W)``.
            queries: ``[(t, y, x), ...]`` fractional coordinates in [0, 1].
        Returns:
            ``(B, Q, T', H', W')`` over the (subsampled) key grid; rows sum to 1 for the softmax
            instantiations, and are the raw normalised affinities ``f / M`` otherwise.
        """
        B, C, T, H, W = x.shape
        idx = [tuple(min(int(float(c) * n), n - 1) for c, n in zip(qpos, (T, H, W))) for qpos in queries]
        ti, yi, xi = (torch.tensor(list(col), device=x.device) for col in zip(*idx))
        xq = x[:, :, ti, yi, xi]  # (B, C, Q)
        if self.instantiation != "gaussian":
            w = self.theta.weight.flatten(1)  # (d, C)
            q = torch.einsum("dc,bcq->bqd", w, xq) + self.theta.bias
        else:
            q = xq.transpose(1, 2)
        k, _, grid = self._keys(x)
        if self.instantiation in ("embedded_gaussian", "gaussian"):
            weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        elif self.instantiation == "dot_product":
            weights = q @ k.transpose(1, 2) / k.shape[1]
        else:
            weights = self._concat_logits(q, k)
        return rearrange(weights, "b q (t h w) -> b q t h w", t=grid[0], h=grid[1], w=grid[2])
