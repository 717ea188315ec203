"""Shared command-line handling for tools/: ``--config CFG [key=value ...]``."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from omegaconf import DictConfig

from videoattn.config.loader import ConfigError, load_config


def config_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with ``--config`` and trailing ``key=value`` overrides (``opts``)."""
    parser = argparse.ArgumentParser(description=description,
                                     epilog="Trailing key=value pairs override config keys, "
                                            "e.g. solver.base_lr=0.01 data.num_workers=2")
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("opts", nargs="*", default=[], help="key=value overrides")
    return parser


def parse_config(parser: argparse.ArgumentParser,
                 argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, DictConfig]:
    """Parse ``argv``; exit with a one-line message on a config error (no traceback)."""
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.opts)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    return args, cfg
