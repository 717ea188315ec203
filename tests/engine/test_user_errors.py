"""One base class for user errors (issue 20): ``exit_on_user_error`` turns a
:class:`~videoattn.utils.errors.OneLineError` into one line and lets anything else (a bug) reach
the user with its traceback, through the real tools."""

import pytest
from evalkit import run

from videoattn.apps.predict import PredictError
from videoattn.cli import exit_on_user_error
from videoattn.config import ConfigError
from videoattn.data.annotations import AnnotationError
from videoattn.data.decoding import DecodeError, TruncatedVideoError
from videoattn.datasets.prepare_rows import InputError
from videoattn.evaluation.metrics import NonFiniteError, NonFiniteLossError
from videoattn.utils.distributed import CollectiveTimeout
from videoattn.utils.download import DownloadError
from videoattn.utils.errors import InputNotFound, OneLineError, UsageError
from videoattn.utils.io import WriteError
from videoattn.utils.launcher import LauncherError
from videoattn.utils.lock import LockError
from videoattn.utils.outputs import OutputError
from videoattn.utils.rendezvous import RendezvousError
from videoattn.utils.serialization import CheckpointError, UntrustedCheckpointError
from videoattn.utils.state_dict import ConversionError

USER_ERRORS = [
    ConfigError,
    AnnotationError,
    DecodeError,
    TruncatedVideoError,
    InputError,
    NonFiniteError,
    NonFiniteLossError,
    PredictError,
    CollectiveTimeout,
    DownloadError,
    UsageError,
    InputNotFound,
    WriteError,
    LauncherError,
    LockError,
    OutputError,
    RendezvousError,
    CheckpointError,
    UntrustedCheckpointError,
    ConversionError,
]

# Patches the model's forward with a bug, then runs the tool named by argv[1] as python would.
WRAPPER = """import runpy, sys
from videoattn.models.resnet3d import ResNet3D
def forward(self, x):
    raise ValueError("injected bug in forward")
ResNet3D.forward = forward
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_every_user_error_derives_from_the_one_base(cls):
    assert issubclass(cls, OneLineError)


def test_only_the_base_becomes_one_line(capsys):
    with pytest.raises(SystemExit) as e, exit_on_user_error(distributed=False):
        raise UsageError("--top-k must be >= 1")
    assert e.value.code == 1 and capsys.readouterr().err == "error: --top-k must be >= 1\n"
    with pytest.raises(SystemExit), exit_on_user_error(distributed=False):
        raise CheckpointError("checkpoint not found: x.pyth")
    assert capsys.readouterr().err == "checkpoint error: checkpoint not found: x.pyth\n"
    for bug in (ValueError("a bug"), FileNotFoundError(2, "No such file"), KeyError("k")):
        with pytest.raises(type(bug)), exit_on_user_error(distributed=False):
            raise bug
    assert capsys.readouterr().err == ""


def test_a_user_error_through_predict_is_one_line(setup):
    proc = run(
        [
            "tools/predict.py",
            "--config",
            setup["cfg"],
            "--checkpoint",
            setup["ckpt"],
            "--top-k",
            "0",
            "--input",
            setup["data"]["good"][0],
            "--output",
            str(setup["tmp"] / "topk"),
        ]
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: --top-k must be >= 1, got 0"


@pytest.mark.parametrize("tool", ["predict", "test_net"])
def test_a_bug_in_the_model_reaches_the_user_with_its_traceback(setup, tool):
    """A ValueError raised by the model's forward (a bug, not a user error) is not turned into an
    ``error:`` line: the tool fails with the traceback that names where it was raised."""
    wrapper = setup["tmp"] / "buggy_forward.py"
    wrapper.write_text(WRAPPER)
    out = str(setup["tmp"] / f"bug_{tool}")
    extra = ["--input", setup["data"]["good"][0], "--output", out] if tool == "predict" else [f"output_dir={out}"]
    proc = run([str(wrapper), f"tools/{tool}.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"], *extra])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "ValueError: injected bug in forward", proc.stderr[-3000:]
    assert 'in forward\n    raise ValueError("injected bug in forward")' in proc.stderr
    assert not any(ln.startswith("error:") for ln in proc.stderr.splitlines())
