"""What every tool in ``tools/`` shares: ``--config CFG [key=value ...]`` parsing, the checkpoint
arguments, and one-line exits on user errors (with process-group teardown)."""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Iterator, Optional, Sequence, Tuple

from videoattn.config import Config, ConfigError, load_config
from videoattn.data.decoding import DecodeError
from videoattn.models.presets import resolve_model_config
from videoattn.utils.distributed import cleanup
from videoattn.utils.errors import OneLineError
from videoattn.utils.io import WriteError
from videoattn.utils.serialization import CheckpointError


def config_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with ``--config`` and trailing ``key=value`` overrides (``opts``)."""
    parser = argparse.ArgumentParser(description=description,
                                     epilog="Trailing key=value pairs override config keys, "
                                            "e.g. solver.base_lr=0.01 data.num_workers=2")
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("opts", nargs="*", default=[], help="key=value overrides")
    return parser


def parse_config(parser: argparse.ArgumentParser,
                 argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, Config]:
    """Parse ``argv`` into (args, config with the model preset expanded); exit with a one-line
    message on a config error (no traceback)."""
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.opts)
        cfg.model = resolve_model_config(cfg.model)
    except (ConfigError, ValueError) as e:
        sys.exit(f"config error: {e}")
    return args, cfg


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` (and ``--trust-checkpoint``), shared by the tools that load trained weights."""
    parser.add_argument("--checkpoint", default="", help="checkpoint file (default: test.checkpoint_file, else "
                        "OUTPUT_DIR/checkpoints/checkpoint_best.pyth, else the newest epoch checkpoint there)")
    add_trust_argument(parser)


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: the explicit opt-in to full unpickling (see videoattn.utils.serialization)."""
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow a checkpoint that needs full unpickling (a pickled module, unknown classes); "
                             "unpickling can run code: only for files from a trusted source")


@contextlib.contextmanager
def exit_on_user_error(distributed: bool = True, interrupted: str = "interrupted") -> Iterator[None]:
    """Turn a bad checkpoint, undecodable video, missing file, bad annotation, a locked or unwritable
    output, a full disk or a collective's timeout into a one-line exit (no traceback, status 1), and
    Ctrl-C into the line ``str(KeyboardInterrupt)`` or ``interrupted`` (status 130); tear down the
    process group afterwards when ``distributed``."""
    try:
        yield
    except KeyboardInterrupt as e:
        print(str(e) or interrupted, file=sys.stderr, flush=True)
        sys.exit(130)
    except (OneLineError, WriteError) as e:
        sys.exit(f"error: {e}")
    except CheckpointError as e:
        sys.exit(f"checkpoint error: {e}")
    except DecodeError as e:
        sys.exit(f"video error: {e}")
    except (FileNotFoundError, ValueError) as e:  # AnnotationError and DecodeError set-up problems are ValueErrors
        sys.exit(f"error: {e}")
    finally:
        if distributed:
            cleanup()
