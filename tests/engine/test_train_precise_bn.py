"""Precise BN in one process: plain averages over the batches, a short loader is no error."""

import torch
from torch import nn

from videoattn.data.transforms import DeviceNormalizer
from videoattn.train.precise_bn import update_bn_stats

MOVE = DeviceNormalizer([0, 0, 0], [1, 1, 1])  # float clips are only moved to the device


def test_precise_stats_are_batch_averages_and_short_loader_is_fine():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.BatchNorm3d(3), nn.Conv3d(3, 2, 1), nn.BatchNorm3d(2, momentum=0.3)).eval()
    batches = [{"clip": torch.randn(4, 3, 2, 5, 5, generator=g) * (i + 1) + i} for i in range(3)]
    used = update_bn_stats(model, batches, num_batches=50, device=torch.device("cpu"), normalize=MOVE)
    assert used == 3
    x = torch.stack([b["clip"] for b in batches])  # (N, B, C, T, H, W)
    ref_mean = torch.stack([b["clip"].mean(dim=(0, 2, 3, 4)) for b in batches]).mean(0)
    ref_var = torch.stack([b["clip"].transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for b in batches]).mean(0)
    assert torch.allclose(model[0].running_mean, ref_mean, atol=1e-5)
    assert torch.allclose(model[0].running_var, ref_var, rtol=1e-4)
    # The overall mean equals the mean over all batches at once (equal batch sizes).
    assert torch.allclose(model[0].running_mean, x.transpose(0, 2).flatten(1).mean(1), atol=1e-5)
    assert not model.training and model[2].momentum == 0.3 and model[0].momentum == 0.1


def test_empty_loader_keeps_old_statistics():
    model = nn.Sequential(nn.BatchNorm3d(3))
    model[0].running_mean.fill_(0.5)
    assert update_bn_stats(model, [], num_batches=5, device=torch.device("cpu"), normalize=MOVE) == 0
    assert torch.allclose(model[0].running_mean, torch.full((3,), 0.5))
