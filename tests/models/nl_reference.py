"""Explicit non-local reference for the tests: builds the full (THW) x (THW') matrix.

Written from the paper's equations with plain tensor ops; it only reads the block's weights.
"""

import torch
import torch.nn.functional as F


def explicit_nonlocal(block, x, bn_batch_stats=False):
    """Return (output, f) with f the full (B, N, M) pairwise-weight matrix.

    BN uses the running statistics (eval mode), or the batch's (train mode) if ``bn_batch_stats``.
    """
    B, C, T, H, W = x.shape
    xp = F.max_pool3d(x, block.pool.kernel_size, block.pool.stride) if block.pool is not None else x
    if block.instantiation == "gaussian":
        theta, phi = x, xp
    else:
        theta = F.conv3d(x, block.theta.weight, block.theta.bias)
        phi = F.conv3d(xp, block.phi.weight, block.phi.bias)
    g = F.conv3d(xp, block.g.weight, block.g.bias)
    th, ph, gg = theta.reshape(B, theta.shape[1], -1), phi.reshape(B, phi.shape[1], -1), g.reshape(B, g.shape[1], -1)
    d, M = th.shape[1], ph.shape[2]
    if block.instantiation == "concatenation":
        N = th.shape[2]
        pairs = torch.cat(
            [
                th.transpose(1, 2)[:, :, None, :].expand(B, N, M, d),
                ph.transpose(1, 2)[:, None, :, :].expand(B, N, M, d),
            ],
            dim=-1,
        )  # (B, N, M, 2d)
        f = F.relu(pairs @ block.concat_project.weight[0] + block.concat_project.bias[0]) / M
    else:
        f = torch.einsum("bdn,bdm->bnm", th, ph)
        if block.instantiation == "dot_product":
            f = f / M
        else:
            f = torch.softmax(f / d**0.5, dim=-1)
    y = torch.einsum("bnm,bem->ben", f, gg).reshape(B, gg.shape[1], T, H, W)
    z = F.conv3d(y, block.out.weight, block.out.bias)
    bn = block.bn
    if bn_batch_stats:
        z = F.batch_norm(z, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    else:
        z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    return x + z, f


def randomize_bn(module, seed=0):
    """Give every BatchNorm non-trivial affine parameters and running statistics (no zero-init)."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return module


@torch.no_grad()
def calibrate_bn(module, *inputs, seed=0):
    """Random BN affine parameters, then running statistics measured on ``inputs`` (as precise-BN
    does), so activations -- and logits -- keep a realistic O(1..10) scale through a deep net."""
    randomize_bn(module, seed)
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    module.train()
    for x in inputs:
        module(x)
    for m in bns:
        m.momentum = 0.1
    return module.eval()
