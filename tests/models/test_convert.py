"""Checkpoint conversion: pytorchvideo hub models with equal logits, PySlowFast key names,
and tools/convert_checkpoint.py end to end."""

import os
import subprocess
import sys

import pytest
import torch
from nl_reference import calibrate_bn
from pyslowfast_names import to_pyslowfast
from pytorchvideo.models.hub import c2d_r50, i3d_r50, slow_r50

from videoattn.config import config_from_dict, load_config
from videoattn.engine.checkpoint import load_checkpoint
from videoattn.models import build_model
from videoattn.models.convert import convert_state_dict, from_pyslowfast, read_state_dict
from videoattn.utils.state_dict import ConversionError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env() -> dict:
    """The tool runs this checkout's videoattn (not whichever one the environment has installed)."""
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def _converted(preset, ref, source="pytorchvideo", state=None):
    model = build_model(load_config(None, [f"model.preset={preset}"]).model).eval()
    converted, notes = convert_state_dict(source, ref.state_dict() if state is None else state, model)
    assert notes == []
    model.load_state_dict(converted, strict=True)
    return model


@pytest.fixture(scope="module")
def clip224():
    return torch.randn(1, 3, 8, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def ptv_i3d(clip224):
    torch.manual_seed(0)
    return calibrate_bn(i3d_r50(pretrained=False), torch.randn(2, 3, 8, 224, 224))


@pytest.fixture(scope="module")
def ptv_logits(ptv_i3d, clip224):
    with torch.no_grad():
        return ptv_i3d(clip224)


def test_pytorchvideo_i3d_r50_equal_logits(ptv_i3d, ptv_logits, clip224):
    model = _converted("I3D_R50", ptv_i3d)
    with torch.no_grad():
        ref, out = ptv_logits, model(clip224)
        feat = model.forward_head(model.forward_features(clip224), pre_logits=True)
    assert (ref - out).abs().max().item() < 1e-4
    assert ref.std() > 1e-2 and feat.shape == (1, 2048)


@pytest.mark.parametrize(
    "builder,preset,head_pool", [(slow_r50, "SLOW_R50", (4, 3, 3)), (c2d_r50, "C2D_R50", (2, 3, 3))]
)
def test_pytorchvideo_slow_and_c2d_equal_logits(builder, preset, head_pool):
    # 4x96x96 keeps this fast; pytorchvideo's fixed head pool is resized to that clip
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 96, 96)
    ref = builder(pretrained=False)
    ref.blocks[-1].pool = torch.nn.AvgPool3d(head_pool, stride=1)
    ref = calibrate_bn(ref, torch.randn(2, 3, 4, 96, 96))
    model = _converted(preset, ref)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max().item() < 1e-4


# PySlowFast names and shapes of I3D_NLN_8x8_R50 (400 classes), written out from PySlowFast's
# video_model_builder.py / resnet_helper.py / stem_helper.py / nonlocal_helper.py / head_helper.py:
# stage s<k> holds pathway0_res<i> (branch1 = shortcut, branch2.{a,b,c} + *_bn) and
# pathway0_nonlocal<i> after block i; stem s1.pathway0_stem; head.projection.
PYSLOWFAST_TABLE = {
    "s1.pathway0_stem.conv.weight": (64, 3, 5, 7, 7),
    "s1.pathway0_stem.bn.running_var": (64,),
    "s2.pathway0_res0.branch1.weight": (256, 64, 1, 1, 1),
    "s2.pathway0_res0.branch1_bn.weight": (256,),
    "s2.pathway0_res0.branch2.a.weight": (64, 64, 3, 1, 1),
    "s2.pathway0_res2.branch2.b.weight": (64, 64, 1, 3, 3),
    "s2.pathway0_res2.branch2.c_bn.bias": (256,),
    "s3.pathway0_res0.branch2.a.weight": (128, 256, 3, 1, 1),
    "s3.pathway0_res1.branch2.a.weight": (128, 512, 1, 1, 1),
    "s3.pathway0_nonlocal1.conv_theta.weight": (256, 512, 1, 1, 1),
    "s3.pathway0_nonlocal1.conv_phi.bias": (256,),
    "s3.pathway0_nonlocal3.conv_g.weight": (256, 512, 1, 1, 1),
    "s3.pathway0_nonlocal3.conv_out.weight": (512, 256, 1, 1, 1),
    "s3.pathway0_nonlocal3.bn.weight": (512,),
    "s4.pathway0_res5.branch2.c.weight": (1024, 256, 1, 1, 1),
    "s4.pathway0_nonlocal5.conv_theta.weight": (512, 1024, 1, 1, 1),
    "s5.pathway0_res0.branch2.a.weight": (512, 1024, 1, 1, 1),
    "s5.pathway0_res1.branch2.a.weight": (512, 2048, 3, 1, 1),
    "s5.pathway0_res2.branch2.c_bn.running_mean": (2048,),
    "head.projection.weight": (400, 2048),
    "head.projection.bias": (400,),
}


def test_pyslowfast_names_shapes_and_round_trip():
    model = build_model(load_config(None, ["model.preset=I3D_NL_R50"]).model)
    exported = to_pyslowfast(model.state_dict())
    for key, shape in PYSLOWFAST_TABLE.items():
        assert key in exported, key
        assert tuple(exported[key].shape) == shape, key
    assert len([k for k in exported if "nonlocal" in k and k.endswith("conv_theta.weight")]) == 5
    back = from_pyslowfast(exported)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    # newer PySlowFast names the non-local norm 'norm'; both load
    renamed = {k.replace("nonlocal1.bn.", "nonlocal1.norm."): v for k, v in exported.items()}
    assert from_pyslowfast(renamed).keys() == back.keys()


def _ptv_to_pyslowfast_names(state):
    """Test-local renaming pytorchvideo i3d_r50 -> PySlowFast, from the table above (not the library's)."""
    stage = {1: 2, 3: 3, 4: 4, 5: 5}  # blocks.2 is the temporal pool
    branch = {
        "branch1_conv": "branch1",
        "branch1_norm": "branch1_bn",
        "branch2.conv_a": "branch2.a",
        "branch2.norm_a": "branch2.a_bn",
        "branch2.conv_b": "branch2.b",
        "branch2.norm_b": "branch2.b_bn",
        "branch2.conv_c": "branch2.c",
        "branch2.norm_c": "branch2.c_bn",
    }
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[1] == "0":
            out[f"s1.pathway0_stem.{'conv' if parts[2] == 'conv' else 'bn'}.{parts[-1]}"] = v
        elif parts[2] == "proj":
            out[f"head.projection.{parts[-1]}"] = v
        else:
            module = ".".join(parts[4:-1])
            out[f"s{stage[int(parts[1])]}.pathway0_res{parts[3]}.{branch[module]}.{parts[-1]}"] = v
    return out


@pytest.mark.slow
def test_pyslowfast_checkpoint_through_the_tool(ptv_i3d, ptv_logits, clip224, tmp_path):
    src = tmp_path / "I3D_8x8_R50.pyth"
    torch.save({"model_state": _ptv_to_pyslowfast_names(ptv_i3d.state_dict()), "epoch": 196}, src)
    out = tmp_path / "converted.pyth"
    cfg = os.path.join(ROOT, "configs/kinetics400/I3D_R50.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools/convert_checkpoint.py"),
            "--source",
            "pyslowfast",
            "--input",
            str(src),
            "--config",
            cfg,
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(str(out))
    assert {"model_state", "config", "meta"} <= set(ckpt) and ckpt["meta"]["source"].startswith("pyslowfast")
    model = build_model(config_from_dict(ckpt["config"]).model).eval()
    model.load_state_dict(ckpt["model_state"])
    with torch.no_grad():
        assert (ptv_logits - model(clip224)).abs().max().item() < 1e-4


@pytest.mark.slow
def test_pytorchvideo_through_the_tool_into_nl_config(ptv_i3d, tmp_path):
    src = tmp_path / "ptv.pth"
    torch.save(ptv_i3d.state_dict(), src)
    out = tmp_path / "nl.pyth"
    proc = subprocess.run(
        [
            sys.executable,
            "tools/convert_checkpoint.py",
            "--source",
            "pytorchvideo",
            "--input",
            str(src),
            "--config",
            "configs/kinetics400/I3D_NL_R50.yaml",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "res3.1.nl.theta.weight: left as initialised" in proc.stdout
    state = load_checkpoint(str(out))["model_state"]
    assert torch.equal(
        state["res4.5.conv1.weight"], ptv_i3d.state_dict()["blocks.4.res_blocks.5.branch2.conv_a.weight"]
    )
    assert torch.equal(state["res4.5.nl.bn.weight"], torch.zeros(1024))  # non-local starts as identity


@pytest.mark.slow
def test_mismatches_fail_clearly(ptv_i3d, tmp_path):
    wrong = build_model(load_config(None, ["model.preset=SLOW_R50"]).model)
    with pytest.raises(ValueError, match="stem.conv.weight"):
        convert_state_dict("pytorchvideo", ptv_i3d.state_dict(), wrong)
    with pytest.raises(ConversionError, match="two-pathway"):
        from_pyslowfast({"s1.pathway1_stem.conv.weight": torch.zeros(1)})
    bad = tmp_path / "garbage.pyth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pyth"):
        read_state_dict(str(bad))
    proc = subprocess.run(
        [
            sys.executable,
            "tools/convert_checkpoint.py",
            "--source",
            "pyslowfast",
            "--input",
            str(bad),
            "--config",
            "configs/kinetics400/I3D_R50.yaml",
            "--output",
            str(tmp_path / "x.pyth"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.returncode != 0 and "garbage.pyth" in proc.stderr
    assert not (tmp_path / "x.pyth").exists()


def _convert_r18(src, out):
    """tools/convert_checkpoint.py: torchvision resnet18 weights into a C2D R18 of the same width."""
    return subprocess.run(
        [
            sys.executable,
            "tools/convert_checkpoint.py",
            "--source",
            "torchvision",
            "--input",
            str(src),
            "--config",
            "configs/synthetic/C2D_R18.yaml",
            "--output",
            str(out),
            "model.base_channels=64",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )


@pytest.mark.slow
def test_output_never_replaces_the_input_or_a_file_the_tool_did_not_write(tmp_path):
    import torchvision

    src = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), src)
    source_bytes = src.read_bytes()
    os.link(src, tmp_path / "hard.pth")
    os.symlink(src.name, tmp_path / "soft.pth")
    (tmp_path / "sub").mkdir()
    for out in (src, tmp_path / "hard.pth", tmp_path / "soft.pth", tmp_path / "sub" / ".." / src.name):
        proc = _convert_r18(src, out)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
            f"error: --output {out} is the input file {src}; not replaced: choose another --output"
        ], proc.stderr
    mine = tmp_path / "mine.pyth"
    mine.write_bytes(b"the user's own weights")
    proc = _convert_r18(src, mine)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: {mine} exists and was not written by convert_checkpoint; not replaced: move it away or use "
        "another --output"
    ], proc.stderr
    assert src.read_bytes() == source_bytes and mine.read_bytes() == b"the user's own weights"
    converted = tmp_path / "converted.pyth"
    for _ in range(2):  # its own earlier output: replaced on a rerun
        proc = _convert_r18(src, converted)
        assert proc.returncode == 0, proc.stderr
    assert set(load_checkpoint(str(converted))) >= {"model_state", "config", "meta"}
    proc = _convert_r18(converted, converted)  # its own output as the input: still the input
    assert proc.returncode == 1 and "is the input file" in proc.stderr
    assert src.read_bytes() == source_bytes and set(load_checkpoint(str(converted))) >= {"model_state"}


# Patches the pytorchvideo renaming with a bug, then runs the tool named by argv[1] as python would.
BUGGY_RENAME = """import runpy, sys
import videoattn.models.convert as convert
def from_pytorchvideo(state):
    raise KeyError("injected bug in the renaming")
convert.from_pytorchvideo = from_pytorchvideo
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_bug_in_the_conversion_keeps_its_traceback(tmp_path):
    """Only a ConversionError (weights that do not fit) becomes one line; a KeyError from a bug in the
    conversion code is not dressed up as "conversion failed" but fails with its traceback."""
    src, wrapper = tmp_path / "w.pth", tmp_path / "buggy_rename.py"
    torch.save({"blocks.0.conv.weight": torch.zeros(1)}, src)
    wrapper.write_text(BUGGY_RENAME)
    args = ["--source", "pytorchvideo", "--input", str(src), "--config", "configs/kinetics400/I3D_R50.yaml"]
    proc = subprocess.run(
        [sys.executable, str(wrapper), "tools/convert_checkpoint.py", *args, "--output", str(tmp_path / "x.pyth")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "KeyError: 'injected bug in the renaming'", proc.stderr[-2000:]
    assert "conversion failed" not in proc.stderr and not (tmp_path / "x.pyth").exists()
