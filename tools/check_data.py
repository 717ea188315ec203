#!/usr/bin/env python
"""Decode every video of a split the way training will; write a report and a clean annotation file.

    python tools/check_data.py --config CFG [--split train|val|test] [--workers N] [--output DIR] [key=value ...]

Writes DIR/check_<split>.csv (one row per video: status, reason, frames, fps, size, decode time),
DIR/check_<split>_summary.txt and DIR/<annotation>_clean.<ext> (the good rows only; point
data.<split>_split at it). Deletes nothing, and replaces only files it wrote itself (an
annotation or a user's file of those names is refused in one line). Exit code 0: every video is fine, 1: some are not,
2: an error stopped the check (bad config or annotation file, unwritable report folder).
"""

import os
import sys

from videoattn.cli import config_parser, parse_config
from videoattn.datasets.check import run_check, settings_from_config
from videoattn.utils.errors import OneLineError

ERROR = 2


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "val", "test"), default="train")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--output", default="", help="report folder (default: OUTPUT_DIR/check_data)")
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds one video may take before its worker is killed"
    )
    parser.add_argument("--no-progress", action="store_true")
    try:
        args, cfg = parse_config(parser, argv)
    except SystemExit as e:  # a config error (a message): status 2 here, 1 means "some videos are broken"
        if not isinstance(e.code, str):
            raise
        print(e.code, file=sys.stderr)
        return ERROR
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    try:
        settings = settings_from_config(cfg.data, args.split)
        output = args.output or os.path.join(cfg.output_dir, "check_data")
        return run_check(settings, output, args.workers, args.time_limit, not args.no_progress)
    except OneLineError as e:  # AnnotationError, a bad backend name, an output not check_data's
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}", file=sys.stderr)
    return ERROR


if __name__ == "__main__":
    sys.exit(main())
