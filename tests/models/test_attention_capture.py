"""capture_attention: every CBAM map and the requested non-local rows, outputs untouched."""

import torch
from nl_reference import explicit_nonlocal, randomize_bn

from videoattn.config import load_config
from videoattn.models import build_model, capture_attention
from videoattn.models.nonlocal_block import NonLocal3d


def _model():
    torch.manual_seed(0)
    cfg = load_config(None, ["model.preset=I3D_NL_CBAM_R18", "model.base_channels=8", "model.num_classes=4"])
    return randomize_bn(build_model(cfg.model)).eval()


def test_maps_and_unchanged_outputs():
    model = _model()
    x = torch.randn(2, 3, 8, 64, 64)
    queries = [(0.5, 0.5, 0.5), (0.0, 0.9, 0.1), (1.0, 1.0, 1.0)]
    nl_inputs = {}
    pre = [
        m.register_forward_pre_hook(lambda m, inp, n=n: nl_inputs.__setitem__(n, inp[0]))
        for n, m in model.named_modules()
        if isinstance(m, NonLocal3d)
    ]
    with torch.no_grad():
        plain = model(x)
        with capture_attention(model, queries) as maps:
            captured = model(x)
    for h in pre:
        h.remove()
    assert torch.equal(plain, captured)
    cbam_keys = {f"res{s}.{j}.cbam" for s in (2, 3, 4, 5) for j in (0, 1)}
    assert set(maps) == cbam_keys | {"res3.1.nonlocal", "res4.1.nonlocal"}
    # CBAM maps: (B, T, H, W) at each stage's resolution, in [0, 1]
    assert maps["res2.0.cbam"].shape == (2, 8, 16, 16)
    assert maps["res3.1.cbam"].shape == (2, 4, 8, 8)
    assert maps["res5.1.cbam"].shape == (2, 4, 2, 2)
    assert all(0 <= maps[k].min() and maps[k].max() <= 1 for k in cbam_keys)
    # non-local rows equal the explicit matrix rows of the same query positions
    for stage in ("res3", "res4"):
        block = model.get_submodule(f"{stage}.1.nl")
        inp = nl_inputs[f"{stage}.1.nl"]
        _, f = explicit_nonlocal(block, inp)
        T, H, W = inp.shape[2:]
        rows = maps[f"{stage}.1.nonlocal"]
        assert rows.shape[:2] == (2, 3) and rows[0, 0].numel() == f.shape[-1]
        for qi, (t, y, xx) in enumerate(queries):
            n = (min(int(t * T), T - 1) * H + min(int(y * H), H - 1)) * W + min(int(xx * W), W - 1)
            assert (rows[:, qi].flatten(1) - f[:, n]).abs().max() < 1e-5
        assert torch.allclose(rows.flatten(2).sum(-1), torch.ones(2, 3), atol=1e-5)


def test_hooks_are_removed_and_no_queries_means_no_nonlocal_maps():
    model = _model()
    x = torch.randn(1, 3, 8, 32, 32)
    with capture_attention(model) as maps:
        model(x)
    assert maps and not any(k.endswith(".nonlocal") for k in maps)
    assert all(not m._forward_hooks for m in model.modules())
    with capture_attention(model, [(0.5, 0.5, 0.5)]) as maps2:
        pass
    assert maps2 == {}


def test_wrapped_model_keys_are_clean():
    class Wrapper(torch.nn.Module):  # DDP and torch.compile add 'module.' / '_orig_mod.'
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return self.module(x)

    wrapped = Wrapper(_model())
    with torch.no_grad(), capture_attention(wrapped, [(0.5, 0.5, 0.5)]) as maps:
        wrapped(torch.randn(1, 3, 8, 32, 32))
    assert "res3.1.nonlocal" in maps and "res2.0.cbam" in maps
