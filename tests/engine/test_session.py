"""The run session, in-process: the device decisions made once and in one place, the typed run
position behind the Ctrl-C line, and the one all-reduce per update read as :class:`StepFlags`."""

import ast
import os
import signal

import pytest
import torch

import videoattn.engine.session as session_lib
from videoattn.config import load_config
from videoattn.engine.session import one_process_session
from videoattn.train.loop import EpochSummary
from videoattn.train.meter import Meter
from videoattn.train.midepoch import Interrupts
from videoattn.train.session import Position, StepFlags, TrainSession, interrupt_line
from videoattn.utils.distributed import DistInfo

TINY = ["model.preset=C2D_R18", "model.num_classes=4"]
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "videoattn")


def test_the_device_decisions_are_made_once_when_the_session_opens(monkeypatch):
    calls = {"for_device": 0, "configure_backends": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    for name in calls:
        monkeypatch.setattr(session_lib, name, counted(name, getattr(session_lib, name)))
    cfg = load_config(None, TINY + ["device=cpu"])
    assert cfg.model.depth is None  # the preset is not expanded yet
    session = one_process_session(cfg)
    assert calls == {"for_device": 1, "configure_backends": 1}
    assert session.cfg.model.depth == 18 and session.cfg.model.channels_last  # preset, CPU layout
    assert session.device == torch.device("cpu") and session.is_main and session.amp is None
    assert session.normalize.memory_format == torch.channels_last_3d
    bf16 = one_process_session(load_config(None, TINY + ["device=cpu", "test.mixed_precision=bf16"]))
    assert bf16.amp == torch.bfloat16


def test_fp16_on_cpu_fails_when_the_session_opens_unless_the_tool_does_not_autocast():
    cfg = load_config(None, TINY + ["device=cpu", "test.mixed_precision=fp16"])
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        one_process_session(cfg)
    assert one_process_session(cfg, precision=None).amp is None  # visualize: no autocast


def _calls_outside_engine(names):
    found = []
    for folder, _, files in os.walk(ROOT):
        for file in files:
            path = os.path.join(folder, file)
            if not file.endswith(".py") or os.path.relpath(folder, ROOT).split(os.sep)[0] in ("engine", "utils"):
                continue  # where these are defined (utils: distributed_run's own init_distributed)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            found += [
                f"{os.path.relpath(path, ROOT)} {n.func.id}"
                for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names
            ]
    return found


def test_entry_points_leave_the_device_set_up_to_the_session():
    assert _calls_outside_engine(
        {"for_device", "configure_backends", "load_inference_model", "init_distributed", "resolve_model_config"}
    ) == ["models/builder.py resolve_model_config"]  # build_model's own, for library callers


class Loader:
    position = 2  # batches drawn so far in this pass

    def __len__(self):
        return 10


def test_the_position_names_epoch_iteration_and_checkpoint_in_the_ctrl_c_line():
    position = Position(epoch=1, start=3)
    assert position.interrupted(Loader()) == "interrupted at epoch 2, iteration 5/10; last checkpoint: none"
    position.iteration, position.checkpoint = 10, "ck.pyth"
    with (
        pytest.raises(
            KeyboardInterrupt,
            match=r"^interrupted at epoch 2, iteration 10/10; last checkpoint: "
            r"ck\.pyth$",
        ),
        interrupt_line(position, Loader()),
    ):
        raise KeyboardInterrupt
    with pytest.raises(KeyError), interrupt_line(position, Loader()):
        raise KeyError("other errors pass")


def _train_session():
    cfg = load_config(None, TINY + ["device=cpu"])
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    session = TrainSession.for_process(cfg, info, "train")
    session.interrupts = Interrupts(0.0, info)
    return session


def test_one_all_reduce_per_update_gives_typed_flags():
    session = _train_session()
    sums = Meter(torch.device("cpu"))
    sums.add(loss_sum=torch.tensor(2.0))
    assert session.agree(sums) == StepFlags(finite=True, stop=False, save=False)
    with session.interrupts:
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal: stop, and save first
        assert session.agree(sums) == StepFlags(True, stop=True, save=True)
    sums.add(loss_sum=torch.tensor(float("nan")))
    assert session.agree(sums) == StepFlags(False)  # non-finite: no stop or save decided


def test_the_epoch_summary_keeps_the_broken_videos_out_of_its_metrics():
    summary = EpochSummary(
        epoch=2,
        global_step=8,
        loss=1.5,
        top1=0.25,
        clips=64,
        clips_per_s=10.0,
        data_wait_frac=0.1,
        skipped=1,
        broken=[("a.mp4", "bad"), ("b.mp4", "worse")],
        val={"top1": 0.5, "skipped": 1},
    )
    assert list(summary.to_metrics()) == [
        "epoch",
        "global_step",
        "loss",
        "top1",
        "clips",
        "clips_per_s",
        "data_wait_frac",
        "skipped",
        "val_top1",
        "val_skipped",
    ]
