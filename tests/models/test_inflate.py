"""2D -> 3D inflation from torchvision ResNets, checked with the boring-video property
against the 2D torchvision network itself (random weights; nothing is downloaded)."""

import pytest
import torch
import torchvision
from nl_reference import randomize_bn

from videoattn.config import load_config
from videoattn.models import build_model
from videoattn.models.convert import convert_state_dict
from videoattn.models.inflate import inflate_kernel


def _torchvision(depth, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(getattr(torchvision.models, f"resnet{depth}")(num_classes=10), seed).eval()


def _close(ref, out, tol=1e-4):
    """Max abs difference within ``tol`` relative to the logit scale (random BN stats make
    R50 logits reach ~1e2, where float32 rounding alone is ~1e-5)."""
    return (ref - out).abs().max().item() <= tol * max(1.0, ref.abs().max().item())


def _inflated(net2d, depth, temporal, mode, *extra):
    cfg = load_config(None, [f"model.depth={depth}", f"model.temporal={temporal}", "model.num_classes=10", *extra])
    model = build_model(cfg.model).eval()
    state, _ = convert_state_dict("torchvision", net2d.state_dict(), model, inflation=mode)
    model.load_state_dict(state, strict=False)
    return model


@pytest.mark.parametrize("depth", [18, 50])
def test_c2d_on_static_clip_equals_2d_network(depth):
    net2d = _torchvision(depth)
    # non-local blocks keep their zero-init BN: the inflated network must still equal the 2D one
    model = _inflated(net2d, depth, "c2d", "mean", "model.non_local.locations=[[],[1],[1],[]]")
    image = torch.randn(2, 3, 64, 64)
    clip = image[:, :, None].repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        ref, out = net2d(image), model(clip)
    assert _close(ref, out)
    assert ref.abs().max().item() > 1e-2


def test_i3d_centre_inflation_on_static_clip_equals_2d_network():
    net2d = _torchvision(18)
    model = _inflated(net2d, 18, "i3d", "centre")
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref, out = net2d(image), model(image[:, :, None].repeat(1, 1, 8, 1, 1))
    assert _close(ref, out)


def test_i3d_mean_inflation_gives_2d_feature_at_centre_time_step():
    net2d = _torchvision(18)
    model = _inflated(net2d, 18, "i3d", "mean")
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(net2d.children())[:-1])  # up to avgpool
        ref = trunk(image).flatten(1)
        fmap = model.forward_features(image[:, :, None].repeat(1, 1, 32, 1, 1))  # (1, 512, 16, 2, 2)
    centre = fmap[:, :, fmap.shape[2] // 2].mean(dim=(2, 3))
    edge = fmap[:, :, 0].mean(dim=(2, 3))
    assert _close(ref, centre)
    assert (edge - ref).abs().max().item() > 1e-3  # zero temporal padding does matter at the border


def test_inflate_kernel_modes():
    w = torch.randn(4, 3, 3, 3)
    mean = inflate_kernel(w, 5, "mean")
    centre = inflate_kernel(w, 5, "centre")
    assert mean.shape == centre.shape == (4, 3, 5, 3, 3)
    assert torch.allclose(mean.sum(2), w, atol=1e-6)
    assert torch.equal(centre[:, :, 2], w) and centre[:, :, [0, 1, 3, 4]].abs().sum() == 0
    with pytest.raises(ValueError, match="centre"):
        inflate_kernel(w, 3, "middle")


def test_layout_mismatch_is_reported():
    net2d = _torchvision(18)
    model = build_model(load_config(None, ["model.depth=34", "model.num_classes=10"]).model)
    with pytest.raises(ValueError, match="lacks"):
        convert_state_dict("torchvision", net2d.state_dict(), model)
    narrow = build_model(load_config(None, ["model.depth=18", "model.base_channels=16"]).model)
    with pytest.raises(ValueError, match="base_channels"):
        convert_state_dict("torchvision", net2d.state_dict(), narrow)


def test_1000_class_head_is_left_for_finetuning():
    torch.manual_seed(0)
    net2d = torchvision.models.resnet18()
    model = build_model(load_config(None, ["model.depth=18", "model.num_classes=5"]).model)
    head_before = model.head.proj.weight.clone()
    state, notes = convert_state_dict("torchvision", net2d.state_dict(), model)
    model.load_state_dict(state, strict=False)
    assert any(n.startswith("fc.weight") for n in notes)
    assert torch.equal(model.head.proj.weight, head_before)
    assert torch.equal(
        model.res3[0].downsample[0].weight[:, :, 0, 0, 0], net2d.layer2[0].downsample[0].weight[:, :, 0, 0]
    )
