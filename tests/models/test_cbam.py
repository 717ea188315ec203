"""Per-frame CBAM in its three forms (official, article, legacy), orders and gates: each equals an
independent frame-by-frame 2D reference written here from the descriptions (docs/model.md#cbam),
outputs and gradients; the official initialisation; parameter counts; frames never mix.

The reference uses plain torch ops and reads only the module's parameter tensors (copied into
leaf tensors of its own), never videoattn's gates.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from videoattn.config import load_config
from videoattn.data.transforms import DeviceNormalizer
from videoattn.models import build_model
from videoattn.models.cbam import CBAM, CBAMForm
from videoattn.train.precise_bn import update_bn_stats

FORMS = ("official", "article", "legacy")
EPS = 1e-5  # the official BN's eps


def params_of(cbam):
    """The module's weights as independent leaf tensors: {name: tensor}."""
    return {n: p.detach().clone().requires_grad_(True) for n, p in cbam.named_parameters()}


def ref_channel(frame, p, bias):
    """Channel gate of one frame (B, C, H, W) -> (B, C, 1, 1): sigmoid(MLP(avg) + MLP(max))."""

    def mlp(v):
        h = v @ p["channel.mlp.0.weight"].T + (p["channel.mlp.0.bias"] if bias else 0)
        return torch.relu(h) @ p["channel.mlp.2.weight"].T + (p["channel.mlp.2.bias"] if bias else 0)

    avg, mx = frame.mean(dim=(2, 3)), frame.amax(dim=(2, 3))
    return torch.sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]


def ref_spatial(frames, p, variant, bn_stats):
    """Spatial gates of a list of frames (B, C, H, W) -> list of (B, 1, H, W).

    official: cat(max_c, mean_c) -> conv -> BN (batch statistics over every frame of the batch in
    training, ``bn_stats`` = (running mean, running var) in eval) -> sigmoid; else cat(mean_c, max_c)."""
    w = p["spatial.conv.weight"]
    logits = []
    for f in frames:
        mean, mx = f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)
        pooled = torch.cat([mx, mean] if variant == "official" else [mean, mx], dim=1)
        logits.append(F.conv2d(pooled, w, padding=w.shape[-1] // 2))
    if variant == "official":
        if bn_stats is None:
            z = torch.stack(logits)
            bn_stats = (z.mean(), z.var(unbiased=False))
        mu, var = bn_stats
        logits = [(z - mu) / torch.sqrt(var + EPS) * p["spatial.bn.weight"] + p["spatial.bn.bias"] for z in logits]
    return [torch.sigmoid(z) for z in logits]


def ref_cbam(x, p, form, bn_stats=None):
    """CBAM of ``form`` on x (B, C, T, H, W), frame by frame."""
    frames = list(x.unbind(dim=2))
    bias = form.variant != "article"

    def channel(fs):
        return [f * ref_channel(f, p, bias) for f in fs]

    def spatial(fs):
        return [f * g for f, g in zip(fs, ref_spatial(fs, p, form.variant, bn_stats))]

    if form.gates == "channel":
        out = channel(frames)
    elif form.gates == "spatial":
        out = spatial(frames)
    elif form.order == "channel_spatial":
        out = spatial(channel(frames))
    elif form.order == "spatial_channel":
        out = channel(spatial(frames))
    else:  # parallel: both gates from the same x
        gs = ref_spatial(frames, p, form.variant, bn_stats)
        out = [f * ref_channel(f, p, bias) * g for f, g in zip(frames, gs)]
    return torch.stack(out, dim=2)


def randomize(cbam, seed):
    """Non-trivial values for the zero-initialised official BN and biases (else half the
    parameters would get no gradient and the test could not see them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cbam.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if cbam.spatial is not None and cbam.spatial.bn is not None:
            cbam.spatial.bn.running_mean.fill_(0.3)
            cbam.spatial.bn.running_var.fill_(1.7)
    return cbam


def check_against_reference(form, training, seed=0):
    torch.manual_seed(seed)
    cbam = randomize(CBAM(12, reduction=3, kernel_size=5, form=form), seed).train(training)
    x = torch.randn(2, 12, 3, 7, 6, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    p = params_of(cbam)
    bn = cbam.spatial.bn if cbam.spatial is not None else None
    stats = None if training or bn is None else (bn.running_mean.clone(), bn.running_var.clone())
    out, ref = cbam(x), ref_cbam(xr, p, form, stats)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-5, rtol=1e-4)
    for name, param in cbam.named_parameters():
        torch.testing.assert_close(param.grad, p[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    return cbam


@pytest.mark.parametrize("variant", FORMS)
@pytest.mark.parametrize("training", [False, True])
def test_each_form_equals_the_framewise_reference(variant, training):
    cbam = check_against_reference(CBAMForm(variant), training)
    keys = set(dict(cbam.named_parameters()))
    assert ("channel.mlp.0.bias" in keys) == (variant != "article")
    assert ("spatial.bn.weight" in keys) == (variant == "official")


@pytest.mark.parametrize(
    "variant,order,gates",
    [(v, o, "both") for v, o in itertools.product(FORMS, ("spatial_channel", "parallel"))]
    + [(v, "channel_spatial", g) for v, g in itertools.product(FORMS, ("channel", "spatial"))],
)
def test_orders_and_gates_equal_the_reference(variant, order, gates):
    cbam = check_against_reference(CBAMForm(variant, order, gates), training=variant == "official", seed=3)
    assert (cbam.channel is None) == (gates == "spatial") and (cbam.spatial is None) == (gates == "channel")


def test_official_bn_running_statistics_follow_momentum_0_01():
    torch.manual_seed(4)
    cbam = CBAM(8, reduction=2, form=CBAMForm("official")).train()
    logits = []
    cbam.spatial.bn.register_forward_hook(lambda m, i, o: logits.append(i[0].detach()))  # the conv's output
    cbam(torch.randn(2, 8, 3, 6, 6))
    z = logits[0]
    assert cbam.spatial.bn.eps == EPS and cbam.spatial.bn.momentum == 0.01
    torch.testing.assert_close(cbam.spatial.bn.running_mean, 0.01 * z.mean().reshape(1))
    torch.testing.assert_close(cbam.spatial.bn.running_var, 0.99 + 0.01 * z.var(unbiased=True).reshape(1))


def test_official_initialisation_gate_is_one_half_everywhere():
    torch.manual_seed(5)
    x = 10 * torch.randn(2, 16, 3, 9, 7)
    cfg = load_config(None, ["model.preset=I3D_NL_CBAM_R18", "model.base_channels=4", "model.num_classes=3"])
    model = build_model(cfg.model)  # the ResNet init loop must leave CBAM's own init alone
    blocks = [m for m in model.modules() if isinstance(m, CBAM)]
    assert len(blocks) == 8 and all(b.form == CBAMForm("official") for b in blocks)
    for cbam in blocks + [CBAM(16, reduction=4, form=CBAMForm("official"))]:
        for p in (cbam.channel.mlp[0].bias, cbam.channel.mlp[2].bias, cbam.spatial.bn.weight, cbam.spatial.bn.bias):
            assert torch.equal(p, torch.zeros_like(p))
    fresh = CBAM(16, reduction=4, form=CBAMForm("official"))
    for mode in (True, False):
        gate = fresh.train(mode).spatial(x)
        assert gate.shape == (2, 1, 3, 9, 7) and torch.equal(gate, torch.full_like(gate, 0.5))


def cbam_param_count(c, r, k, form):
    """Parameters of one CBAM by formula: MLP 2*C*h weights (+ h + C biases), conv 2*k*k (+ BN 2)."""
    h = max(c // r, 1)
    channel = 2 * c * h + (h + c if form.variant != "article" else 0)
    spatial = 2 * k * k + (2 if form.variant == "official" else 0)
    return channel * (form.gates != "spatial") + spatial * (form.gates != "channel")


ALL_FORMS = [CBAMForm(v, gates=g) for v, g in itertools.product(FORMS, ("both", "channel", "spatial"))]


@pytest.mark.parametrize("form", ALL_FORMS, ids=lambda f: f"{f.variant}-{f.gates}")
def test_parameter_counts(form):
    for c, r, k in ((64, 16, 7), (8, 16, 3), (30, 4, 5)):
        assert sum(p.numel() for p in CBAM(c, r, k, form).parameters()) == cbam_param_count(c, r, k, form)


def test_parameter_counts_in_the_demo_model():
    """I3D_NL_CBAM_R18 at base_channels 4: 2 blocks per stage at widths 4, 8, 16, 32, reduction 4."""
    base = ["model.preset=I3D_NL_CBAM_R18", "model.num_classes=3", "model.base_channels=4"]

    def count(*overrides):
        return sum(p.numel() for p in build_model(load_config(None, base + list(overrides)).model).parameters())

    without = count("model.cbam.stages=[]")
    for form in ALL_FORMS:
        extra = count(f"model.cbam.variant={form.variant}", f"model.cbam.gates={form.gates}") - without
        assert extra == sum(2 * cbam_param_count(c, 4, 7, form) for c in (4, 8, 16, 32)), form


@pytest.mark.parametrize("variant", FORMS)
def test_frame_locality(variant):
    torch.manual_seed(1)
    cbam = randomize(CBAM(16, reduction=2, form=CBAMForm(variant)), 1).eval()
    x = torch.randn(1, 16, 5, 8, 8)
    x2 = x.clone()
    x2[:, :, 2] += torch.randn(16, 8, 8)
    diff = (cbam(x2) - cbam(x)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[2] > 1e-3
    assert torch.equal(diff[[0, 1, 3, 4]], torch.zeros(4))


def test_gates_in_unit_interval_and_shapes():
    torch.manual_seed(2)
    cbam = randomize(CBAM(16, reduction=16), 2)  # hidden width clamps to 1
    x = 10 * torch.randn(2, 16, 3, 5, 5)
    ch, sp = cbam.channel(x), cbam.spatial(x)
    assert ch.shape == (2, 16, 3, 1, 1) and sp.shape == (2, 1, 3, 5, 5)
    for gate in (ch, sp):
        assert gate.min() >= 0 and gate.max() <= 1
    assert cbam.channel.mlp[0].out_features == 1


def test_precise_bn_and_sync_bn_handle_the_spatial_bn():
    """Precise BN recomputes the 2D BN inside CBAM as it does the 3D ones; SyncBN conversion
    (bn.sync) keeps its eps, momentum and zero weight, and the same outputs."""
    torch.manual_seed(6)
    cbam = CBAM(3, reduction=1, kernel_size=3, form=CBAMForm("official")).eval()
    logits = []
    hook = cbam.spatial.bn.register_forward_hook(lambda m, i, o: logits.append(i[0].detach()))
    batches = [{"clip": torch.randn(2, 3, 2, 5, 5) * (i + 1)} for i in range(3)]
    move = DeviceNormalizer([0, 0, 0], [1, 1, 1])
    assert update_bn_stats(cbam, batches, num_batches=3, device=torch.device("cpu"), normalize=move) == 3
    hook.remove()
    bn = cbam.spatial.bn
    torch.testing.assert_close(bn.running_mean, torch.stack([z.mean() for z in logits]).mean().reshape(1))
    torch.testing.assert_close(bn.running_var, torch.stack([z.var() for z in logits]).mean().reshape(1))
    assert bn.momentum == 0.01 and not cbam.training
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(CBAM(3, 1, 3, CBAMForm("official")))
    assert isinstance(synced.spatial.bn, torch.nn.SyncBatchNorm)
    assert synced.spatial.bn.momentum == 0.01 and synced.spatial.bn.eps == EPS
    assert float(synced.spatial.bn.weight.detach()) == 0.0
    synced.load_state_dict(randomize(cbam, 7).state_dict())
    x = torch.randn(2, 3, 2, 5, 5)
    torch.testing.assert_close(synced.eval()(x), cbam(x))
