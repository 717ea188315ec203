"""Checkpoints record their CBAM form: today's (legacy) checkpoints give today's logits under
model.cbam.variant=legacy, and a checkpoint of another form is refused in one line naming the
override, by every load path (inference tools, fine-tuning, resume), never loaded into that form.

data/legacy_cbam_i3d_r18.pyth and data/legacy_cbam_logits.pt were written by the code of main at
c625c65 (before model.cbam.variant existed) with data/make_legacy_cbam_checkpoint.py (how: its
docstring): a tiny I3D_NL_CBAM_R18 saved as training saves it, and its logits on a seeded input.
"""

import os
import subprocess
import sys

import pytest
import torch

from videoattn.config import config_to_dict, load_config
from videoattn.engine.checkpoint import load_pretrained, make_checkpoint, save_checkpoint
from videoattn.engine.device import for_device
from videoattn.engine.inference import load_weights
from videoattn.models import build_model
from videoattn.train.state import TrainState
from videoattn.utils.serialization import CheckpointError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LEGACY = os.path.join(HERE, "data", "legacy_cbam_i3d_r18.pyth")
LEGACY_LOGITS = os.path.join(HERE, "data", "legacy_cbam_logits.pt")
# what data/make_legacy_cbam_checkpoint.py built
TINY = ["model.preset=I3D_NL_CBAM_R18", "model.base_channels=2", "model.num_classes=3", "model.dropout=0.0"]
LEGACY_REFUSAL = (
    f"{LEGACY} holds CBAM form 'legacy' (written before model.cbam.variant existed); "
    "this model is 'official': add model.cbam.variant=legacy"
)


def tiny_model(*overrides):
    cfg = for_device(load_config(None, TINY + list(overrides)), torch.device("cpu"))
    return build_model(cfg.model), cfg


def test_legacy_checkpoint_gives_todays_logits():
    model, _ = tiny_model("model.cbam.variant=legacy")
    load_weights(model, LEGACY)
    ref = torch.load(LEGACY_LOGITS, weights_only=True)
    clip = torch.randn(ref["input_shape"], generator=torch.Generator().manual_seed(ref["input_seed"]))
    with torch.no_grad():
        logits = model.eval()(clip)
        torch.testing.assert_close(logits, ref["logits"], atol=1e-6, rtol=0)
        # the logits depend on CBAM's pooling order (so the comparison above can see the form)
        for m in model.modules():
            if hasattr(m, "spatial") and m.spatial is not None:
                m.spatial.conv.weight.copy_(m.spatial.conv.weight.flip(1))
        assert (model(clip) - ref["logits"]).abs().max() > 1e-3


def test_legacy_checkpoint_is_refused_with_the_standard_form():
    model, _ = tiny_model()
    with pytest.raises(CheckpointError) as e:
        load_weights(model, LEGACY)
    assert str(e.value) == LEGACY_REFUSAL


def test_tool_refuses_legacy_checkpoint_in_one_line(tmp_path):
    """tools/test_net.py with the standard form: exit 1, the one line, no traceback, nothing decoded."""
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    config = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
    args = ["--config", config, "--checkpoint", LEGACY, f"output_dir={tmp_path}", f"data.root={tmp_path}"] + TINY
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "test_net.py")] + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == f"checkpoint error: {LEGACY_REFUSAL}"


def write_checkpoint(path, *overrides, config=True):
    """A checkpoint of the tiny model of ``overrides``, with its run config as training saves it
    (``config=False``: none, as a foreign tool might write it)."""
    torch.manual_seed(0)
    model, cfg = tiny_model(*overrides)
    save_checkpoint(str(path), make_checkpoint(model.state_dict(), config_to_dict(cfg) if config else None))
    return str(path)


@pytest.mark.parametrize(
    "file_form,model_form,message",
    [
        (["model.cbam.variant=official"], ["model.cbam.variant=article"], "'official' (recorded in its config); "
         "this model is 'article': add model.cbam.variant=official"),
        (["model.cbam.variant=article"], ["model.cbam.variant=official"], "'article' (recorded in its config); "
         "this model is 'official': add model.cbam.variant=article"),
        (["model.cbam.gates=channel"], [], "'official' (gates channel) (recorded in its config); "
         "this model is 'official': add model.cbam.gates=channel"),
        (["model.cbam.order=parallel"], [], "'official' (order parallel) (recorded in its config); "
         "this model is 'official': add model.cbam.order=parallel"),
    ],
    ids=["official-file-article-model", "article-file-official-model", "gates", "order"],
)  # fmt: skip
def test_other_form_is_refused_by_inference_fine_tuning_and_resume(tmp_path, file_form, model_form, message):
    path = write_checkpoint(tmp_path / "c.pyth", *file_form)
    model, _ = tiny_model(*model_form)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_weights(model, path)
    assert str(e.value) == f"{path} holds CBAM form {message}"
    with pytest.raises(CheckpointError) as e:
        load_pretrained(model, path)
    assert str(e.value) == f"{path} holds CBAM form {message}"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(model, opt, torch.optim.lr_scheduler.StepLR(opt, 1), torch.amp.GradScaler("cpu", enabled=False))
    with pytest.raises(CheckpointError) as e:
        state.restore(torch.load(path, weights_only=True), path)
    assert "auto-resume" in str(e.value) and str(e.value).endswith(message.split(": ")[-1])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing was loaded


def test_form_without_a_config_is_read_from_the_tensors(tmp_path):
    path = write_checkpoint(tmp_path / "article.pyth", "model.cbam.variant=article", config=False)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tiny_model()[0], path)  # non-strict: would otherwise load part of it
    assert str(e.value) == (
        f"{path} holds CBAM form 'article' (read from its tensors; its config does not record model.cbam); "
        "this model is 'official': add model.cbam.variant=article"
    )
    load_weights(tiny_model("model.cbam.variant=article")[0], path)


@pytest.mark.parametrize(
    "overrides", [[], ["model.cbam.variant=article", "model.cbam.order=spatial_channel", "model.cbam.gates=both"]]
)
def test_same_form_loads(tmp_path, overrides):
    path = write_checkpoint(tmp_path / "c.pyth", *overrides)
    model, _ = tiny_model(*overrides)
    load_weights(model, path)
    load_pretrained(model, path)
    # an unresolved config (variant null: a library caller's load_config) falls back on the tensors
    config = config_to_dict(load_config(None, TINY))
    assert config["model"]["cbam"]["variant"] is None
    save_checkpoint(path, make_checkpoint(model.state_dict(), config))
    load_weights(model, path)
