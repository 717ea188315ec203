"""Backbone construction: shapes for every depth and preset, temporal kernel patterns,
gradient flow, extraction layers, head reset and config errors."""

import pytest
import torch
from nl_reference import randomize_bn

from videoattn.config import load_config
from videoattn.models import PRESETS, build_model, reset_head
from videoattn.models.cbam import CBAM
from videoattn.models.nonlocal_block import NonLocal3d
from videoattn.models.presets import resolve_model_config
from videoattn.models.resnet3d import STAGE_DEPTHS, TEMPORAL_PATTERNS


def _cfg(*overrides):
    return load_config(None, list(overrides))


@pytest.mark.parametrize("depth", sorted(STAGE_DEPTHS))
@pytest.mark.parametrize("temporal", sorted(TEMPORAL_PATTERNS))
def test_shapes_every_depth(depth, temporal):
    model = build_model(
        _cfg(f"model.depth={depth}", "model.base_channels=4", f"model.temporal={temporal}", "model.num_classes=7").model
    ).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        res5 = model.forward_features(x)
        feat = model.forward_head(res5, pre_logits=True)
        logits = model.forward_head(res5)
    expansion = 4 if depth >= 50 else 1
    assert model.feature_dim == 4 * 8 * expansion
    assert feat.shape == (2, model.feature_dim) and logits.shape == (2, 7)
    t_out = 8 // TEMPORAL_PATTERNS[temporal]["pool1"]
    assert res5.shape == (2, model.feature_dim, t_out, 1, 1)
    n_blocks = sum(len(getattr(model, s)) for s in ("res2", "res3", "res4", "res5"))
    assert n_blocks == sum(STAGE_DEPTHS[depth])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_and_runs(preset):
    cfg = _cfg(f"model.preset={preset}", "model.base_channels=8", "model.num_classes=5")
    model = build_model(cfg.model).eval()
    cfg.model = resolve_model_config(cfg.model)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        out = model(x)
        maps = model.forward_intermediates(x, ["res2", "res3", "res4", "res5"])
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert out.shape == (1, 5) and pooled.shape == (1, model.feature_dim)
    assert torch.allclose(model.head(pooled), out, atol=1e-6)
    assert torch.allclose(pooled, maps["res5"].mean(dim=(2, 3, 4)))
    widths = [maps[f"res{i}"].shape[1] for i in (2, 3, 4, 5)]
    assert widths == [model.feature_dim // 8, model.feature_dim // 4, model.feature_dim // 2, model.feature_dim]
    nl = [n for n, m in model.named_modules() if isinstance(m, NonLocal3d)]
    expected_nl = [f"res{s + 2}.{j}.nl" for s, locs in enumerate(cfg.model.non_local.locations) for j in locs]
    assert nl == expected_nl
    cbam_stages = {int(n[3]) for n, m in model.named_modules() if isinstance(m, CBAM)}
    assert cbam_stages == set(cfg.model.cbam.stages)
    if cbam_stages:  # every block of those stages
        n_cbam = sum(isinstance(m, CBAM) for m in model.modules())
        assert n_cbam == sum(len(getattr(model, f"res{s}")) for s in cbam_stages)


def test_contract_feature_dims():
    assert build_model(_cfg("model.preset=I3D_R50").model).feature_dim == 2048
    r18 = resolve_model_config(_cfg("model.preset=I3D_NL_CBAM_R18").model)
    assert build_model(r18).feature_dim == 512 * r18.base_channels // 64


@pytest.mark.parametrize("temporal", sorted(TEMPORAL_PATTERNS))
def test_temporal_kernels_follow_the_pattern(temporal):
    model = build_model(_cfg("model.depth=50", "model.base_channels=4", f"model.temporal={temporal}").model)
    pattern = TEMPORAL_PATTERNS[temporal]
    assert model.stem.conv.kernel_size == (pattern["stem"], 7, 7)
    for i, stage in enumerate(("res2", "res3", "res4", "res5")):
        got = [blk.conv1.kernel_size[0] for blk in getattr(model, stage)]
        basis = pattern["stages"][i]
        assert got == [basis[j % len(basis)] for j in range(len(got))]
        assert all(
            blk.conv2.kernel_size == (1, 3, 3) and blk.conv3.kernel_size == (1, 1, 1) for blk in getattr(model, stage)
        )


def test_i3d_r50_kernels_match_pytorchvideo():
    """Independent reference: pytorchvideo's i3d_r50 builder lists its conv_a kernels per block."""
    from pytorchvideo.models.hub import i3d_r50

    ref = i3d_r50(pretrained=False)
    ref_kernels = [m.branch2.conv_a.kernel_size for m in ref.modules() if hasattr(m, "branch2")]
    model = build_model(_cfg("model.preset=I3D_R50").model)
    ours = [blk.conv1.kernel_size for s in ("res2", "res3", "res4", "res5") for blk in getattr(model, s)]
    assert ours == ref_kernels
    assert model.stem.conv.kernel_size == ref.blocks[0].conv.kernel_size
    assert model.pool2.kernel_size == ref.blocks[2].kernel_size


def test_gradients_reach_every_parameter():
    cfg = _cfg(
        "model.preset=I3D_NL_CBAM_R18",
        "model.base_channels=8",
        "model.num_classes=3",
        "model.non_local.locations=[[1],[1],[1],[]]",
    )
    model = randomize_bn(build_model(cfg.model)).train()  # zero-init BNs would block the residual branches
    x = torch.randn(2, 3, 8, 64, 64)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead


def test_zero_init_makes_residual_branches_and_nonlocal_identity():
    model = build_model(_cfg("model.preset=I3D_NL_R50", "model.base_channels=8").model)
    for name, m in model.named_modules():
        if name.endswith(".nl") or (name.count(".") == 1 and name.startswith("res")):
            last = m.bn if name.endswith(".nl") else m.last_bn
            assert torch.equal(last.weight.detach(), torch.zeros_like(last.weight)), name


def test_zero_init_final_bn_off_starts_residual_branches_at_one_and_nonlocal_at_zero():
    """model.zero_init_final_bn=false: the CBAM authors' ResNet init (every BN weight 1), while the
    non-local output BN stays 0 (PySlowFast's NONLOCAL.ZERO_INIT_FINAL_BN, a separate switch there)."""
    model = build_model(_cfg("model.preset=I3D_NL_CBAM_R18", "model.zero_init_final_bn=false").model)
    blocks = [m for n, m in model.named_modules() if n.count(".") == 1 and n.startswith("res")]
    nls = [m for m in model.modules() if isinstance(m, NonLocal3d)]
    assert len(blocks) == 8 and len(nls) == 2
    assert all(torch.equal(b.last_bn.weight.detach(), torch.ones_like(b.last_bn.weight)) for b in blocks)
    assert all(torch.equal(nl.bn.weight.detach(), torch.zeros_like(nl.bn.weight)) for nl in nls)


def test_reset_head():
    model = build_model(_cfg("model.preset=C2D_R18", "model.num_classes=10").model)
    reset_head(model, 4)
    assert model.head.proj.out_features == 4 and model.head.proj.in_features == model.feature_dim
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 4)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("model.depth", 20, "unsupported ResNet depth 20"),
        ("model.temporal", "i3dd", "unknown temporal pattern 'i3dd'"),
        ("model.non_local.locations", [[], [5], [], []], "out of range for res3"),
        ("model.cbam.stages", [1], "stages 2..5"),
    ],
)
def test_bad_model_config_is_rejected(key, value, match):
    cfg = _cfg("model.depth=18")
    *path, name = key.split(".")
    section = cfg
    for part in path:
        section = getattr(section, part)
    setattr(section, name, value)  # set after load_config (which rejects most of these): the model checks too
    with pytest.raises(ValueError, match=match):
        build_model(cfg.model)


def test_bad_extract_layer():
    model = build_model(_cfg("model.preset=C2D_R18").model)
    with pytest.raises(ValueError, match="res4"):
        model.forward_intermediates(torch.randn(1, 3, 4, 32, 32), ["res6"])
