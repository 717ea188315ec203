"""Parameter and FLOP counts against the published numbers and pytorchvideo's builders."""

import os
import re
import subprocess
import sys

import pytest
from pytorchvideo.models.hub import i3d_r50, slow_r50

from videoattn.config import load_config
from videoattn.models import build_model
from videoattn.models.info import count_flops, count_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIP = (1, 3, 8, 224, 224)


def _model(preset):
    return build_model(load_config(None, [f"model.preset={preset}"]).model)


def test_i3d_r50_params_and_flops_match_pytorchvideo():
    ours, ref = _model("I3D_R50"), i3d_r50(pretrained=False)
    assert count_params(ours) == count_params(ref) == 28_043_472  # issue: pytorchvideo i3d_r50
    f_ours, f_ref = count_flops(ours, CLIP), count_flops(ref, CLIP)
    assert abs(f_ours - f_ref) <= 0.01 * f_ref
    assert 27e9 < f_ours < 30e9  # ~28.4-28.5 GFLOPs (multiply-adds) depending on what is counted


def test_slow_r50_params_match_pytorchvideo():
    assert count_params(_model("SLOW_R50")) == count_params(slow_r50(pretrained=False))


def test_i3d_nl_r50_params_match_pyslowfast():
    n = count_params(_model("I3D_NL_R50"))
    assert abs(n - 35.4e6) <= 0.02 * 35.4e6  # PySlowFast I3D_NLN_8x8_R50: 35.4M


def test_attention_is_counted():
    base, nl = count_flops(_model("I3D_R50"), CLIP), count_flops(_model("I3D_NL_R50"), CLIP)
    assert nl > base * 1.1  # non-local convs and the attention products cost ~8 GFLOPs


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg,params",
    [("configs/kinetics400/I3D_R50.yaml", "28,043,472"), ("configs/kinetics400/I3D_NL_R50.yaml", "35,401,936")],
)
def test_model_info_tool(cfg, params):
    proc = subprocess.run(
        [sys.executable, "tools/model_info.py", "--config", cfg], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert f"params:  {params}" in proc.stdout
    gflops = float(re.search(r"FLOPs:\s+([\d.]+) G", proc.stdout).group(1))
    model = build_model(load_config(os.path.join(ROOT, cfg)).model)
    assert gflops == pytest.approx(count_flops(model, CLIP) / 1e9, abs=0.01)


@pytest.mark.slow
def test_model_info_tool_rejects_a_typo():
    proc = subprocess.run(
        [sys.executable, "tools/model_info.py", "--config", "configs/kinetics400/I3D_R50.yaml", "model.depht=18"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode != 0 and "model.depth" in proc.stderr
