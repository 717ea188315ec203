"""Per-frame CBAM: equals a frame-by-frame 2D CBAM, never mixes frames, gates lie in [0, 1]."""

import torch
import torch.nn.functional as F

from videoattn.models.cbam import CBAM


def cbam_2d_reference(cbam, frame):
    """CBAM on one frame (B, C, H, W), written from the paper with the module's weights."""
    mlp = cbam.channel.mlp

    def shared_mlp(v):
        return F.linear(F.relu(F.linear(v, mlp[0].weight, mlp[0].bias)), mlp[2].weight, mlp[2].bias)

    avg = F.adaptive_avg_pool2d(frame, 1).flatten(1)
    mx = F.adaptive_max_pool2d(frame, 1).flatten(1)
    frame = frame * torch.sigmoid(shared_mlp(avg) + shared_mlp(mx))[:, :, None, None]
    desc = torch.stack([frame.mean(1), frame.max(1).values], dim=1)
    conv = cbam.spatial.conv
    spatial = torch.sigmoid(F.conv2d(desc, conv.weight, conv.bias, padding=conv.padding))
    return frame * spatial, spatial[:, 0]


def test_equals_framewise_2d_cbam():
    torch.manual_seed(0)
    cbam = CBAM(32, reduction=4, kernel_size=5)
    x = torch.randn(2, 32, 3, 9, 7)
    out = cbam(x)
    for t in range(3):
        ref, _ = cbam_2d_reference(cbam, x[:, :, t])
        assert (out[:, :, t] - ref).abs().max().item() < 1e-5


def test_frame_locality():
    torch.manual_seed(1)
    cbam = CBAM(16, reduction=2)
    x = torch.randn(1, 16, 5, 8, 8)
    x2 = x.clone()
    x2[:, :, 2] += torch.randn(16, 8, 8)
    diff = (cbam(x2) - cbam(x)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[2] > 1e-3
    assert torch.equal(diff[[0, 1, 3, 4]], torch.zeros(4))


def test_gates_in_unit_interval_and_shapes():
    torch.manual_seed(2)
    cbam = CBAM(16, reduction=16)  # hidden width clamps to 1
    x = 10 * torch.randn(2, 16, 3, 5, 5)
    ch, sp = cbam.channel(x), cbam.spatial(x)
    assert ch.shape == (2, 16, 3, 1, 1) and sp.shape == (2, 1, 3, 5, 5)
    for gate in (ch, sp):
        assert gate.min() >= 0 and gate.max() <= 1
    assert cbam.channel.mlp[0].out_features == 1
