"""What every tool in ``tools/`` shares: ``--config CFG [key=value ...]`` parsing, the checkpoint
arguments, and one-line exits on user errors (with process-group teardown)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, NoReturn, Optional, Sequence, Tuple

from videoattn.config import Config, load_config
from videoattn.engine.device import expand_preset
from videoattn.models.pretrained import PRETRAINED_NAMES, pretrained_entry
from videoattn.utils.distributed import cleanup
from videoattn.utils.errors import OneLineError


def config_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with ``--config`` and trailing ``key=value`` overrides (``opts``)."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Trailing key=value pairs override config keys, e.g. solver.base_lr=0.01 data.num_workers=2",
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("opts", nargs="*", default=[], help="key=value overrides")
    return parser


def parse_config(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
) -> Tuple[argparse.Namespace, Config]:
    """Parse ``argv`` into (args, config with the model preset expanded); exit with a one-line
    message on a config error (no traceback)."""
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.opts)
        cfg = expand_preset(cfg)
        if getattr(args, "pretrained", ""):
            cfg.model.pretrained = args.pretrained
        if cfg.model.pretrained:
            pretrained_entry(cfg.model.pretrained)  # an unknown name fails here, before any work
    except OneLineError as e:  # ConfigError, an unknown preset or pretrained name (UsageError)
        sys.exit(f"config error: {e}")
    return args, cfg


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` or ``--pretrained`` (and ``--trust-checkpoint``), shared by the tools that load
    trained weights."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--checkpoint",
        default="",
        help="checkpoint file (default: test.checkpoint_file, else "
        "OUTPUT_DIR/checkpoints/checkpoint_best.pyth, else the newest epoch checkpoint there, "
        "else model.pretrained)",
    )
    add_pretrained_argument(group, "use these public weights instead of a checkpoint")
    add_trust_argument(parser)


def add_pretrained_argument(parser, what: str = "start training from these public weights (unless resuming)") -> None:
    """``--pretrained NAME``: sets ``model.pretrained`` (see :mod:`videoattn.models.pretrained`)."""
    parser.add_argument(
        "--pretrained",
        default="",
        metavar="NAME",
        help=f"{what}: one of {', '.join(PRETRAINED_NAMES)}; downloaded once into "
        "$VIDEOATTN_HOME/weights (default: torch hub's folder/videoattn/weights) and verified; "
        "sets model.pretrained",
    )


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: the explicit opt-in to full unpickling (see videoattn.utils.serialization)."""
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint that needs full unpickling (a pickled module, unknown classes); "
        "unpickling can run code: only for files from a trusted source",
    )


def print_line(line: str) -> None:
    """Write ``line`` to stderr in one system call: the ranks of a torchrun job share one stream, and
    ``sys.exit(message)`` / ``print`` write the text and its newline separately, so two ranks'
    lines could interleave."""
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), (line + "\n").encode("utf-8", "replace"))
    except (AttributeError, OSError, ValueError):  # a stream without a file descriptor (captured)
        sys.stderr.write(line + "\n")


def exit_with(line: str, status: int = 1) -> NoReturn:
    """:func:`print_line` ``line``, then exit with ``status``."""
    print_line(line)
    raise SystemExit(status)


@contextlib.contextmanager
def exit_on_user_error(distributed: bool = True, interrupted: str = "interrupted") -> Iterator[None]:
    """Turn a user error (:class:`OneLineError`: a bad checkpoint, undecodable video, missing input,
    bad annotation or setting, a locked or unwritable output, a full disk, a collective's timeout)
    into the one line ``<prefix>: <message>`` (no traceback, status 1), and Ctrl-C into the line
    ``str(KeyboardInterrupt)`` or ``interrupted`` (status 130); tear down the process group
    afterwards when ``distributed``. Any other exception is a bug: it passes with its traceback."""
    try:
        yield
    except KeyboardInterrupt as e:
        exit_with(str(e) or interrupted, 130)
    except OneLineError as e:
        exit_with(f"{e.prefix}: {e}")
    finally:
        if distributed:
            cleanup()
