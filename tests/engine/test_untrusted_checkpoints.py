"""Checkpoints from other people are data (issue 9.1): no entry point unpickles code unless told to.

Each payload below creates a marker file when it is unpickled in full; every tool that reads a
checkpoint must refuse it with one line naming ``--trust-checkpoint``, and the marker must never
appear. Real checkpoint kinds (ours, ours from videoattn 0.1.0, PySlowFast, pytorchvideo,
torchvision) still load without the opt-in.
"""

import os
import random
import re

import numpy as np
import pytest
import torch
from ddp_worker import small_overrides
from evalkit import make_eval_root, run, write_config
from pyslowfast_names import to_pyslowfast

from videoattn.config import config_to_dict, load_config
from videoattn.engine import checkpoint as ck
from videoattn.models import build_model
from videoattn.models.convert import read_state_dict
from videoattn.utils.serialization import UntrustedCheckpointError, load_file

DEMO_CFG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs",
    "synthetic",
    "I3D_NL_CBAM_R18.yaml",
)


class Payload:
    """Unpickled in full, this opens (creates) ``marker``: any code could run in its place."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _valid_training_checkpoint(cfg, hide_in_optimizer=None) -> dict:
    model = build_model(cfg.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    opt.step()
    opt_state = opt.state_dict()
    if hide_in_optimizer:
        opt_state["state"][0]["momentum_buffer_extra"] = Payload(hide_in_optimizer)
    return ck.make_checkpoint(
        model.state_dict(),
        config_to_dict(cfg),
        optimizer_state=opt_state,
        scheduler_state={},
        scaler_state={},
        epoch=0,
        global_step=1,
        rng_state=[ck.get_rng_state()],
    )


@pytest.fixture(scope="module")
def setup(synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("untrusted")
    data = make_eval_root(synthetic_root, str(tmp / "data"), num_good=2)
    cfg_path = write_config(str(tmp / "eval.yaml"), data)
    cfg = load_config(cfg_path)
    marker = str(tmp / "PAYLOAD_RAN")
    top = str(tmp / "payload_top.pyth")
    torch.save({"model_state": build_model(cfg.model).state_dict(), "payload": Payload(marker)}, top)
    hidden = str(tmp / "payload_in_optimizer.pyth")
    torch.save(_valid_training_checkpoint(cfg, hide_in_optimizer=marker), hidden)
    return {"tmp": tmp, "data": data, "cfg_path": cfg_path, "cfg": cfg, "marker": marker, "top": top, "hidden": hidden}


def test_the_payloads_really_run_code_when_fully_unpickled(setup):
    """Guard for the tests below: full unpickling of either payload creates the marker."""
    for path in (setup["top"], setup["hidden"]):
        torch.load(path, weights_only=False)
        assert os.path.exists(setup["marker"])
        os.remove(setup["marker"])


def _refused(proc, marker):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "--trust-checkpoint" in out and "full unpickling" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not os.path.exists(marker), "the payload ran"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["top", "hidden"])
@pytest.mark.parametrize("tool", ["test_net", "extract_features", "visualize_attention"])
def test_inference_tools_refuse_payloads(setup, tool, which, tmp_path):
    args = [f"tools/{tool}.py", "--config", setup["cfg_path"], "--checkpoint", setup[which]]
    if tool == "extract_features":
        args += ["--input", setup["data"]["good"][0], "--output", str(tmp_path / "feat")]
    elif tool == "visualize_attention":
        args += ["--video", setup["data"]["good"][0], "--output", str(tmp_path / "a.png")]
    args += [f"output_dir={tmp_path / 'out'}"]
    _refused(run(args), setup["marker"])
    assert not os.path.exists(tmp_path / "feat" / "index.csv") and not os.path.exists(tmp_path / "a.png")


@pytest.mark.slow
@pytest.mark.parametrize("source", ["pyslowfast", "pytorchvideo", "torchvision"])
def test_convert_checkpoint_refuses_payloads(setup, source, tmp_path):
    out = tmp_path / "converted.pyth"
    proc = run(
        [
            "tools/convert_checkpoint.py",
            "--source",
            source,
            "--input",
            setup["top"],
            "--config",
            setup["cfg_path"],
            "--output",
            str(out),
        ]
    )
    _refused(proc, setup["marker"])
    assert not out.exists()


@pytest.mark.slow
def test_training_refuses_payload_as_initial_weights(synthetic_root, setup, tmp_path):
    out = str(tmp_path / "run")
    proc = run(
        [
            "tools/train_net.py",
            "--config",
            DEMO_CFG,
            *small_overrides(synthetic_root, out, "solver.max_epoch=1", f"train.checkpoint_file={setup['top']}"),
        ]
    )
    _refused(proc, setup["marker"])
    assert ck.list_epoch_checkpoints(out) == []


@pytest.mark.slow
def test_auto_resume_refuses_a_payload_placed_in_the_checkpoint_folder(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    overrides = small_overrides(synthetic_root, out, "solver.max_epoch=1")
    marker = str(tmp_path / "PAYLOAD_RAN")
    planted = ck.epoch_checkpoint_path(out, 1)
    os.makedirs(os.path.dirname(planted))
    torch.save(_valid_training_checkpoint(load_config(None, overrides), hide_in_optimizer=marker), planted)
    proc = run(["tools/train_net.py", "--config", DEMO_CFG, *overrides])
    _refused(proc, marker)
    assert planted in proc.stdout + proc.stderr


@pytest.mark.slow
def test_trust_checkpoint_is_an_explicit_opt_in(setup, tmp_path):
    """A whole pickled module (a legitimate file from a trusted colleague) needs the opt-in. The
    refusal names the same globals whatever the hash order (issue 19.18: it named the first 4 of an
    unordered list, so ``torch.nn`` was there or not depending on PYTHONHASHSEED)."""
    module = str(tmp_path / "whole_module.pt")
    torch.save(build_model(setup["cfg"].model), module)
    args = [
        "tools/convert_checkpoint.py",
        "--source",
        "pyslowfast",
        "--config",
        setup["cfg_path"],
        "--input",
        module,
        "--output",
        str(tmp_path / "refused.pyth"),
    ]
    lines = []
    for seed in ("0", "5"):  # 5: the old message named no torch.nn global
        proc = run(args, env_extra={"PYTHONHASHSEED": seed})
        assert proc.returncode != 0 and "--trust-checkpoint" in proc.stderr, proc.stderr[-3000:]
        lines.append([ln for ln in proc.stderr.splitlines() if "refusing to load" in ln])
    assert lines[0] == lines[1] and len(lines[0]) == 1, lines
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(module))
    named = re.search(r"would import (.*?)(?: and \d+ more)?\)", lines[0][0]).group(1).split(", ")
    assert named and set(named) <= unsafe, (named, unsafe)
    assert not os.path.exists(tmp_path / "refused.pyth")
    with pytest.raises(UntrustedCheckpointError):
        read_state_dict(module)
    assert read_state_dict(module, trust=True).keys() == build_model(setup["cfg"].model).state_dict().keys()


class SystemPayload:
    """Unpickled in full, this runs a shell command through ``os.system`` (``posix.system``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_blocked_module_is_named_as_untrusted_not_as_corrupt(setup, tmp_path):
    """torch words an ``os.system`` global as "module posix is blocked" (issue 19.15): still a refusal
    that names the global and the opt-in, not "not a torch file, or corrupt"."""
    marker = str(tmp_path / "SYSTEM_RAN")
    path = str(tmp_path / "system_payload.pyth")
    torch.save({"model_state": build_model(setup["cfg"].model).state_dict(), "x": SystemPayload(marker)}, path)
    out = str(tmp_path / "converted.pyth")
    proc = run(
        [
            "tools/convert_checkpoint.py",
            "--source",
            "pyslowfast",
            "--input",
            path,
            "--config",
            setup["cfg_path"],
            "--output",
            out,
        ]
    )
    _refused(proc, marker)
    assert "posix.system" in proc.stderr and "corrupt" not in proc.stderr, proc.stderr[-3000:]
    assert not os.path.exists(out)


# --- every real checkpoint kind still loads with weights_only=True ------------------------------------


def test_checkpoints_of_videoattn_0_1_0_still_load(setup, tmp_path):
    """0.1.0 stored np.random.get_state() (an ndarray) and torch.__version__ (TorchVersion)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = (random.random(), np.random.rand(), torch.rand(2))
    path = str(tmp_path / "old.pyth")
    torch.save(
        {
            "model_state": {"w": torch.ones(2)},
            "config": {},
            "rng_state": [state],
            "meta": {"torch_version": torch.__version__, "videoattn_version": "0.1.0"},
        },
        path,
    )
    loaded = ck.load_checkpoint(path)
    ck.set_rng_state(loaded["rng_state"][0])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_new_checkpoints_hold_plain_data_only(setup, tmp_path):
    path = str(tmp_path / "new.pyth")
    ck.save_checkpoint(path, _valid_training_checkpoint(setup["cfg"]))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    ck.set_rng_state(ck.load_checkpoint(path)["rng_state"][0])


@pytest.mark.parametrize("kind", ["pyslowfast", "pytorchvideo", "torchvision_zip", "torchvision_legacy"])
def test_public_weight_files_load_as_data(setup, kind, tmp_path):
    model = build_model(setup["cfg"].model)
    path = str(tmp_path / f"{kind}.pth")
    if kind == "pyslowfast":  # PySlowFast's save_checkpoint: epoch, model_state, optimizer_state, cfg (YAML text)
        state = to_pyslowfast({k: v for k, v in model.state_dict().items() if ".cbam." not in k})
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        torch.save(
            {
                "epoch": 3,
                "model_state": state,
                "optimizer_state": opt.state_dict(),
                "cfg": "MODEL:\n  NUM_CLASSES: 8\n",
            },
            path,
        )
    elif kind == "pytorchvideo":  # pytorchvideo's hub files: {"model_state": ...}
        state = {"blocks.0.conv.weight": torch.randn(4, 3, 1, 7, 7)}
        torch.save({"model_state": state}, path)
    else:  # torchvision: a plain state dict, old (legacy) or zip serialisation
        state = {"conv1.weight": torch.randn(4, 3, 7, 7), "fc.bias": torch.zeros(10)}
        torch.save(state, path, _use_new_zipfile_serialization=kind == "torchvision_zip")
    loaded = read_state_dict(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert isinstance(load_file(path), dict)
