"""tools/export.py on the evaluation kit's checkpoint (I3D_NL_CBAM_R18: i3d kernels, full
non-local attention, official CBAM): the ONNX file run by onnxruntime and the torch.export program
compute the eager logits within 1e-4 at two input sizes (batch 1 and 3; 4x64x64 and 8x32x48 clips),
the input layout is in the file's metadata and in FILE.json, predict through the ONNX file gives
the PyTorch path's top-5 on the kit's val videos, the tool writes a TorchScript file in a real
process, and bad input ends in one line. The attention kinds and CBAM forms one by one:
tests/models/test_export_kinds.py."""

import importlib.util
import json
import os
import shutil
import sys

import onnx
import onnxruntime as ort
import pytest
import torch
from evalkit import REPO, check, run

from videoattn.apps.export import EXTRA_FILE, ExportError, export_model, sidecar_path
from videoattn.apps.exported import ExportedModelError, load_onnx_model
from videoattn.apps.predict import predict_videos
from videoattn.config import load_config
from videoattn.engine.inference import build_inference_model
from videoattn.utils.errors import UsageError
from videoattn.utils.outputs import OutputError

TOL = 1e-4  # float32 max abs: the exporters reorder sums (differences ~1e-6 here)
SHAPES = [(1, 3, 4, 64, 64), (3, 3, 8, 32, 48)]  # the kit's clip size and another batch, T, H and W


@pytest.fixture(scope="module")
def exported(setup):
    cfg = load_config(setup["cfg"])
    path = str(setup["tmp"] / "model.onnx")
    result = export_model(cfg, "onnx", path, setup["ckpt"])
    return dict(cfg=cfg, path=path, result=result, eager=build_inference_model(cfg, setup["ckpt"], torch.device("cpu")))


def test_onnx_and_exported_program_match_eager_at_two_sizes(exported):
    session = ort.InferenceSession(exported["path"], providers=["CPUExecutionProvider"])
    program = exported["result"].program.module()
    outputs = []
    for shape in SHAPES:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(len(outputs)))
        with torch.no_grad():
            ref = exported["eager"](x)
            assert (program(x) - ref).abs().max() <= TOL, shape
        got = torch.from_numpy(session.run(["logits"], {"clips": x.numpy()})[0])
        assert got.shape == (shape[0], 8) and (got - ref).abs().max() <= TOL, shape
        outputs.append(ref)
    assert outputs[1].std(dim=0).max() > 10 * TOL  # the logits depend on the clip: the comparison can fail


def test_layout_is_in_the_metadata_and_the_sidecar(exported, setup):
    proto = onnx.load(exported["path"])
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    with open(sidecar_path(exported["path"])) as f:
        assert json.load(f) == meta
    dims = {d["name"]: d for d in meta["input_dims"]}
    assert meta["input_layout"] == "B,C,T,H,W" and [d["axis"] for d in meta["input_dims"]] == [0, 1, 2, 3, 4]
    assert [n for n, d in dims.items() if d["dynamic"]] == ["batch", "time", "height", "width"]
    assert (dims["batch"]["min"], dims["time"]["min"], dims["height"]["min"], dims["channels"]["size"]) == (1, 4, 32, 3)
    assert meta["opset"] == 20 == next(o.version for o in proto.opset_import if o.domain == "")
    cfg = exported["cfg"].data
    assert (meta["mean"], meta["std"]) == (list(cfg.mean), list(cfg.std))
    assert (meta["num_frames"], meta["sampling_rate"], meta["crop_size"]) == (4, 4, 64)
    assert meta["classes"] == [n for n in open(setup["data"]["classes"]).read().splitlines() if n]
    assert meta["model"]["preset"] == "I3D_NL_CBAM_R18" and meta["model"]["non_local"]["attention"] == "full"
    assert meta["check"]["max_abs_diff"] <= TOL and meta["weights"] == setup["ckpt"]
    assert [i.name for i in proto.graph.input] == ["clips"] and [o.name for o in proto.graph.output] == ["logits"]


def test_predict_through_onnx_gives_the_pytorch_top5(exported, setup):
    source = os.path.join(setup["data"]["root"], "val.csv")
    mine, _, _ = predict_videos(exported["cfg"], source, str(setup["tmp"] / "p_onnx"), model_file=exported["path"])
    ref, missing, _ = predict_videos(exported["cfg"], source, str(setup["tmp"] / "p_torch"), setup["ckpt"])
    assert len(mine) == len(ref) == 6 and len(missing) == 1  # 5 good videos, the broken one; the missing row
    for a, b in zip(mine, ref):
        assert (a.path, a.error, a.num_views) == (b.path, b.error, b.num_views)
        assert [n for _, n, _ in a.top] == [n for _, n, _ in b.top] and len(a.top) == (0 if b.error else 5)
        assert all(abs(x[2] - y[2]) <= TOL for x, y in zip(a.top, b.top))
        assert [w.labels for w in a.windows] == [w.labels for w in b.windows]  # the timeline's windows too
    with open(setup["tmp"] / "p_onnx" / "predict_run.json") as f:
        assert json.load(f)["weights"] == "onnx:" + os.path.abspath(exported["path"])


def test_onnx_file_without_a_record_or_onnxruntime_is_one_line(exported, setup, monkeypatch):
    bare = str(setup["tmp"] / "bare.onnx")
    proto = onnx.load(exported["path"])
    del proto.metadata_props[:]
    onnx.save(proto, bare)
    with pytest.raises(ExportedModelError, match="has no videoattn export record .*tools/export.py"):
        load_onnx_model(bare, 1)
    shutil.copy(sidecar_path(exported["path"]), sidecar_path(bare))  # the sidecar is read instead
    assert load_onnx_model(bare, 1).record["num_classes"] == 8
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(UsageError, match=r"onnxruntime is not installed.*pip install -e '\.\[export\]'"):
        load_onnx_model(bare, 1)


def test_bad_input_and_foreign_files_are_refused_before_any_work(exported, setup):
    cfg, ckpt = exported["cfg"], setup["ckpt"]
    foreign = setup["tmp"] / "mine.pt2"
    foreign.write_text("the user's file")
    with pytest.raises(OutputError, match="exists and was not written by export"):
        export_model(cfg, "exported-program", str(foreign), ckpt)
    assert foreign.read_text() == "the user's file" and not os.path.exists(sidecar_path(str(foreign)))
    for kwargs, message in [
        (dict(fmt="onnx", opset=12), "--opset 12: torch .* exports opsets 18..23"),
        (dict(fmt="torchscript", opset=18), "--opset is for --format onnx only"),
        (dict(fmt="tflite"), "--format must be one of onnx, exported-program, torchscript"),
    ]:
        with pytest.raises(UsageError, match=message):
            export_model(cfg, output=str(setup["tmp"] / "x.bin"), checkpoint_path=ckpt, **kwargs)
    with pytest.raises(OutputError, match="is the input file"):
        export_model(cfg, "torchscript", ckpt, ckpt)
    assert issubclass(ExportError, Exception)


def _tool_main():
    spec = importlib.util.spec_from_file_location("export_tool", os.path.join(REPO, "tools", "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_tool_error_is_one_line(setup, capsys):
    with pytest.raises(SystemExit) as e:
        _tool_main()(["--config", setup["cfg"], "--checkpoint", setup["ckpt"], "--format", "onnx", "--opset", "7",
                      "--output", str(setup["tmp"] / "o.onnx")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and len(err.splitlines()) == 1 and "--opset 7" in err, err


@pytest.mark.slow
def test_tool_writes_torchscript_in_a_process(exported, setup):
    out = str(setup["tmp"] / "model.ts")
    proc = check(run(["tools/export.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"],
                      "--format", "torchscript", "--output", out]))  # fmt: skip
    assert f"wrote {out} (torchscript" in proc.stdout and "dynamic batch >= 1, time >= 4" in proc.stdout
    files = {EXTRA_FILE: ""}
    traced = torch.jit.load(out, _extra_files=files)
    with open(sidecar_path(out)) as f:
        assert json.loads(files[EXTRA_FILE]) == json.load(f)
    for shape in SHAPES:
        x = torch.randn(*shape)
        with torch.no_grad():
            assert (traced(x) - exported["eager"](x)).abs().max() <= TOL, shape
