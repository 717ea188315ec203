"""capture_channels records every CBAM block's channel weights (and the chosen blocks' outputs)
without changing the logits; zero_channels zeroes exactly the chosen channels of one block's
output, per batch element, before the residual add."""

import torch
from nl_reference import randomize_bn

from videoattn.config import load_config
from videoattn.models import build_model, capture_channels, zero_channels
from videoattn.models.cbam import CBAM


def _model():
    torch.manual_seed(0)
    cfg = load_config(None, ["model.preset=I3D_NL_CBAM_R18", "model.base_channels=8", "model.num_classes=4"])
    return randomize_bn(build_model(cfg.model)).eval()


def _block_inputs(model):
    """``{key: input}`` of every CBAM block in the next forward pass (a read-only pre-hook)."""
    seen = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, inp, n=n: seen.__setitem__(n, inp[0]))
        for n, m in model.named_modules()
        if isinstance(m, CBAM)
    ]
    return seen, hooks


@torch.no_grad()
def test_weights_and_outputs_match_the_gates_and_logits_are_unchanged():
    model = _model()
    x = torch.randn(2, 3, 8, 32, 32)
    plain = model(x)
    seen, hooks = _block_inputs(model)
    with capture_channels(model, outputs=["res3.1.cbam"]) as found:
        captured = model(x)
    for h in hooks:
        h.remove()
    assert torch.equal(plain, captured)
    assert set(found) == {f"res{s}.{j}.cbam" for s in (2, 3, 4, 5) for j in (0, 1)}
    for key, rec in found.items():
        block = model.get_submodule(key)
        assert rec.weights.shape == seen[key].shape[:3]  # (B, C, T) of the block's input
        assert torch.equal(rec.weights, block.channel(seen[key])[..., 0, 0])  # the gate's own values
        assert 0 < rec.weights.min() and rec.weights.max() < 1
        assert (rec.output is None) == (key != "res3.1.cbam")  # outputs only where asked
    out = found["res3.1.cbam"].output
    assert out.shape == (2, 16, 4, 4, 4) and torch.equal(out, model.get_submodule("res3.1.cbam")(seen["res3.1.cbam"]))
    assert all(not m._forward_hooks for m in model.modules())


class _Masked(torch.nn.Module):
    """The block's CBAM, then a per-sample channel mask: the brute-force form of zero_channels."""

    def __init__(self, cbam, keep):
        super().__init__()
        self.cbam, self.keep = cbam, keep

    def forward(self, x):
        return self.cbam(x) * self.keep[:, :, None, None, None]


@torch.no_grad()
def test_zero_channels_equals_masking_the_block_output():
    model = _model()
    x = torch.randn(1, 3, 8, 32, 32)
    drop = [[0, 5, 15], [], list(range(16))]
    with zero_channels(model, "res3.1.cbam", drop):
        got = model(x.expand(3, -1, -1, -1, -1))
    keep = torch.ones(3, 16)
    for i, d in enumerate(drop):
        keep[i, d] = 0
    block = model.get_submodule("res3.1")
    cbam = block.cbam
    block.cbam = _Masked(cbam, keep)
    want = model(x.expand(3, -1, -1, -1, -1))
    block.cbam = cbam
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.allclose(got[1], model(x)[0], atol=1e-6)  # nothing dropped: the plain logits
    assert not torch.allclose(got[0], got[1], atol=1e-4)  # dropping channels changes the logits
    assert all(not m._forward_hooks for m in model.modules())
