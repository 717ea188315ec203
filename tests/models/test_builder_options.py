"""``model.channels_last`` and ``train.compile``: the two options the GPU benchmark needs."""

import copy

import torch
import torch.nn.functional as F

from videoattn.config import load_config
from videoattn.engine.device import for_device
from videoattn.models import build_model
from videoattn.models.builder import compile_model

TINY = ["model.preset=I3D_NL_CBAM_R18", "model.num_classes=4", "model.base_channels=4", "model.dropout=0"]
CL3D = torch.channels_last_3d


def _build(*overrides):
    torch.manual_seed(0)
    return build_model(load_config(None, TINY + list(overrides)).model)


def test_defaults_follow_the_device():
    """``model.channels_last``, ``data.normalize_on_device`` and the mixed precisions are ``auto``
    (null) until the engine knows the device; ``train.compile`` is off."""
    cfg = load_config(None, TINY)
    assert cfg.model.channels_last is None and cfg.data.normalize_on_device is None and cfg.train.compile is False
    model = build_model(cfg.model)  # unset: plain layout
    assert all(p.is_contiguous() for p in model.parameters())
    assert compile_model(model, False) is model
    cpu = for_device(cfg, torch.device("cpu"))
    assert (
        cpu.model.channels_last,
        cpu.data.normalize_on_device,
        cpu.train.mixed_precision,
        cpu.test.mixed_precision,
    ) == (True, False, "none", "none")
    cuda = for_device(cfg, torch.device("cuda"))  # only the device's type (and bf16 support) is read
    assert (cuda.model.channels_last, cuda.data.normalize_on_device) == (False, True)
    assert cuda.train.mixed_precision == ("bf16" if torch.cuda.is_bf16_supported() else "none")
    explicit = for_device(
        load_config(
            None, TINY + ["model.channels_last=false", "data.normalize_on_device=true", "train.mixed_precision=bf16"]
        ),
        torch.device("cpu"),
    )
    assert (explicit.model.channels_last, explicit.data.normalize_on_device, explicit.train.mixed_precision) == (
        False,
        True,
        "bf16",
    )  # set keys are kept


def test_channels_last_converts_every_5d_tensor_and_keeps_the_numbers():
    plain, cl = _build(), _build("model.channels_last=true")  # CBAM: a 4-D Conv2d weight in every block
    five = [(n, p) for n, p in cl.named_parameters() if p.dim() == 5]
    assert len(five) > 20
    for name, p in five:
        assert p.is_contiguous(memory_format=CL3D), name
        assert p[0, 0].numel() == 1 or not p.is_contiguous(), name  # 1x1x1 kernels fit both layouts
    assert any(p.dim() == 4 for p in cl.parameters())  # CBAM's spatial conv stays as it was
    for (n, a), b in zip(plain.state_dict().items(), cl.state_dict().values()):
        assert torch.equal(a, b), n  # same values: checkpoints interchange
    x = torch.randn(2, 3, 4, 32, 32)
    plain.eval(), cl.eval()
    with torch.no_grad():
        ref = plain(x)
        assert torch.allclose(cl(x.contiguous(memory_format=CL3D)), ref, atol=1e-5)
        assert torch.allclose(cl(x), ref, atol=1e-5)


def _sgd_steps(model, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(2, 3, 4, 16, 16, generator=gen), torch.randint(0, 4, (2,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_compiled_training_steps_match_eager():
    """train.compile: two SGD steps of the default-mode torch.compile (inductor, C++ on CPU) of a
    tiny ResNet-3D equal the eager ones; the compiled wrapper trains the original parameters."""
    torch.manual_seed(0)
    model = build_model(
        load_config(
            None,
            [
                "model.preset=C2D_R18",
                "model.num_classes=4",
                "model.base_channels=4",
                "model.dropout=0",
                "train.compile=true",
            ],
        ).model
    ).train()
    eager, initial = copy.deepcopy(model), copy.deepcopy(model)
    compiled = compile_model(model, load_config(None, ["train.compile=true"]).train.compile)
    assert compiled is not model
    got, want = _sgd_steps(compiled), _sgd_steps(eager)
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4), (got, want)
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        assert torch.allclose(p, q, atol=1e-4), name
    assert not torch.equal(model.head.proj.weight, initial.head.proj.weight)  # it did train
