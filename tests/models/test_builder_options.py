"""``model.channels_last``: an option the GPU benchmark needs."""
import torch

from videoattn.config import load_config
from videoattn.models import build_model

TINY = ["model.preset=I3D_NL_CBAM_R18", "model.num_classes=4", "model.base_channels=4", "model.dropout=0"]
CL3D = torch.channels_last_3d


def _build(*overrides):
    torch.manual_seed(0)
    return build_model(load_config(None, TINY + list(overrides)))


def test_defaults_are_off():
    cfg = load_config(None, TINY)
    assert cfg.model.channels_last is False
    model = build_model(cfg)
    assert all(p.is_contiguous() for p in model.parameters())


def test_channels_last_converts_every_5d_tensor_and_keeps_the_numbers():
    plain, cl = _build(), _build("model.channels_last=true")  # CBAM: a 4-D Conv2d weight in every block
    five = [(n, p) for n, p in cl.named_parameters() if p.dim() == 5]
    assert len(five) > 20
    for name, p in five:
        assert p.is_contiguous(memory_format=CL3D), name
        assert p[0, 0].numel() == 1 or not p.is_contiguous(), name  # 1x1x1 kernels fit both layouts
    assert any(p.dim() == 4 for p in cl.parameters())  # CBAM's spatial conv stays as it was
    for (n, a), b in zip(plain.state_dict().items(), cl.state_dict().values()):
        assert torch.equal(a, b), n   # same values: checkpoints interchange
    x = torch.randn(2, 3, 4, 32, 32)
    plain.eval(), cl.eval()
    with torch.no_grad():
        ref = plain(x)
        assert torch.allclose(cl(x.contiguous(memory_format=CL3D)), ref, atol=1e-5)
        assert torch.allclose(cl(x), ref, atol=1e-5)

