"""Every non-local attention kind and every CBAM form exports: ``torch.export`` with the dynamic
dimensions tools/export.py gives them, then ONNX (dynamo exporter), and both compute what the eager
block does within 1e-4 (float32, max abs) at two input sizes. Full attention and the official CBAM
inside the whole network (I3D_NL_CBAM_R18): tests/engine/test_export.py.

Each export costs about a second whatever its size, so the blocks that share dynamic dimensions
are exported together (one module returning each block's output). Ranges as inside the network:
the non-local blocks (res3, res4) see T >= 2 and H, W >= 2 when the input has T >= 4 and
H, W >= 32; CBAM also runs at res5, down to one cell. local and axial have a dynamic batch only
(tools/export.py fixes T, H, W for them).
"""

import onnxruntime as ort
import pytest
import torch

from videoattn.apps.export import DEFAULT_OPSET, DimSpec, onnx_proto, trace_program
from videoattn.models.cbam import CBAM, VARIANTS, CBAMForm
from videoattn.models.nonlocal_block import NonLocal3d

TOL = 1e-4  # float32: the exporters reorder sums (differences ~1e-6 here)
C = 8


class Together(torch.nn.Module):
    """Blocks run side by side on the same input: ``x -> (block_1(x), block_2(x), ...)``."""

    def __init__(self, blocks: dict):
        super().__init__()
        self.blocks = torch.nn.ModuleDict(blocks)

    def forward(self, x):
        return tuple(block(x) for block in self.blocks.values())


def _dims(spatial_min):
    """``(B, C, T, H, W)`` specs; ``spatial_min`` None: T, H, W fixed at the example's 4 x 6 x 6."""
    dims = [DimSpec("batch", 0, 2, True, 1), DimSpec("channels", 1, C, False)]
    if spatial_min is None:
        return dims + [DimSpec(n, a, s, False) for n, a, s in (("time", 2, 4), ("height", 3, 6), ("width", 4, 6))]
    return dims + [
        DimSpec("time", 2, 4, True, 2),
        DimSpec("height", 3, 6, True, spatial_min),
        DimSpec("width", 4, 6, True, spatial_min),
    ]


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Eval mode, every BN with random statistics and affine (a fresh non-local block is the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.weight.normal_(0, 1, generator=gen)
                m.bias.normal_(0, 0.5, generator=gen)
                m.running_mean.normal_(0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    return module.eval()


def _non_local(kinds, subsample=(1, 2, 2)):
    return {f"non_local-{k}": NonLocal3d(C, C // 2, subsample=subsample, attention=k, window=(2, 4, 4)) for k in kinds}


def _linear_and_cbam():
    """linear attention without key pooling (so it runs on the one-cell maps CBAM sees) and the CBAM forms."""
    cbam = {f"cbam-{v}": CBAM(C, reduction=2, kernel_size=3, form=CBAMForm(v)) for v in VARIANTS}
    return {**_non_local(["linear"], subsample=(1, 1, 1)), **cbam}


CASES = [
    pytest.param(lambda: _non_local(["local", "axial"]), None, [(3, C, 4, 6, 6)], id="local-axial"),
    pytest.param(_linear_and_cbam, 1, [(1, C, 2, 1, 1), (3, C, 5, 7, 4)], id="linear-cbam_" + "_".join(VARIANTS)),
]


@pytest.mark.parametrize("make, spatial_min, other_shapes", CASES)
def test_blocks_export_and_match_eager(make, spatial_min, other_shapes):
    torch.manual_seed(0)
    blocks = make()
    model = _randomised(Together(blocks), seed=1)
    dims = _dims(spatial_min)
    example = torch.randn(*[d.size for d in dims])
    program = trace_program(model, example, dims)
    session = ort.InferenceSession(
        onnx_proto(program, example, DEFAULT_OPSET).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for shape in [tuple(example.shape)] + other_shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            refs, exported = model(x), program.module()(x)
        onnx_outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        for name, ref, ep, ox in zip(blocks, refs, exported, onnx_outputs):
            assert (ref - x).abs().max() > 0.1, name  # not an identity block: the comparison sees the attention
            assert (ep - ref).abs().max() <= TOL, (name, shape, "torch.export")
            assert (torch.from_numpy(ox) - ref).abs().max() <= TOL, (name, shape, "onnxruntime")
