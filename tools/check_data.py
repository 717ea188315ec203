#!/usr/bin/env python
"""Decode every video of a split the way training will; write a report and a clean annotation file.

    python tools/check_data.py --config CFG [--split train|val|test] [--workers N] [--output DIR] [key=value ...]

Writes DIR/check_<split>.csv (one row per video: status, reason, frames, fps, size, decode time),
DIR/check_<split>_summary.txt and DIR/<annotation>_clean.<ext> (the good rows only; point
data.<split>_split at it). Deletes nothing. Exit code 0: every video is fine, 1: some are not, 2: error.
"""
import argparse
import os
import sys

from videoattn.config.loader import ConfigError, load_config
from videoattn.data.annotations import AnnotationError
from videoattn.data.check import run_check, settings_from_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--split", choices=("train", "val", "test"), default="train")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--output", default="", help="report folder (default: OUTPUT_DIR/check_data)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds one video may take before its worker is killed")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs="*", default=[], help="key=value config overrides")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be >= 1")
    try:
        cfg = load_config(args.config, args.opts)
        settings = settings_from_config(cfg, args.split)
        output = args.output or os.path.join(cfg.output_dir, "check_data")
        return run_check(settings, output, args.workers, args.time_limit, not args.no_progress)
    except (ConfigError, AnnotationError, ValueError) as e:
        print(f"error: {e}")
        return 2
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
