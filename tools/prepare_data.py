#!/usr/bin/env python
"""Prepare a Kinetics-style download for training: cut, scale, re-encode, verify (see videoattn/data/prepare*.py).

    python tools/prepare_data.py --annotations train.csv val.csv --source RAW_DIR --output OUT_DIR \\
        [--short-side 320] [--gop 32] [--workers N] [--layout per-label|flat] [--classes FILE|kinetics400]

Writes OUT_DIR/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4 (H.264, a keyframe every --gop
frames; a phone video's display rotation is applied: turned upright), OUT_DIR/<annotation name> with the good
rows only, classes.txt and failed.csv. --workers is capped at the usable cores (said when it is). A rerun skips
verified outputs; a killed run loses nothing.
"""

import argparse
import os
import sys

from videoattn.datasets.prepare_run import DEFAULT_GOP, PrepareOptions, run_prepare
from videoattn.utils.workers import usable_cores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--annotations",
        nargs="+",
        required=True,
        help="Kinetics CSVs, PySlowFast lists or folders per class (one per split)",
    )
    p.add_argument("--source", default="", help="folder searched (recursively) for the source videos")
    p.add_argument("--output", required=True, help="folder to write the prepared dataset to")
    p.add_argument("--short-side", type=int, default=320, help="output short side in pixels (even; never upscaled)")
    p.add_argument("--gop", type=int, default=DEFAULT_GOP, help="frames between keyframes")
    p.add_argument("--crf", type=int, default=23, help="x264 constant rate factor (quality; lower = larger)")
    p.add_argument("--preset", default="veryfast", help="x264 preset")
    p.add_argument(
        "--cabac",
        action="store_true",
        help="x264's CABAC entropy coding: smaller files that decode slower (default: CAVLC; see docs/benchmarks.md)",
    )
    p.add_argument("--layout", choices=("per-label", "flat"), default="per-label")
    p.add_argument(
        "--classes",
        default="",
        help="class list file, or 'kinetics400' for the shipped list (default: the sorted labels of the rows)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=usable_cores(),
        help="worker processes (at most the usable cores and the videos to prepare; default: the cores)",
    )
    p.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds one video may take before its worker is killed"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    needs_source = any(not os.path.isdir(a) for a in args.annotations)
    if needs_source and not args.source:
        p.error("--source is required for annotation files (only folder inputs carry their own videos)")
    opts = PrepareOptions(
        args.annotations,
        args.source,
        args.output,
        short_side=args.short_side,
        gop=args.gop,
        crf=args.crf,
        preset=args.preset,
        layout=args.layout,
        classes=args.classes,
        workers=args.workers,
        time_limit=args.time_limit,
        progress=not args.no_progress,
        cabac=args.cabac,
    )
    return run_prepare(opts)


if __name__ == "__main__":
    sys.exit(main())
