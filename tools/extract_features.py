#!/usr/bin/env python
"""Sliding-window feature extraction; also under torchrun or srun (videos sharded across processes).

    python tools/extract_features.py --config CFG (--checkpoint PATH | --pretrained NAME) \
        --input LIST_OR_FOLDER_OR_VIDEO --output DIR [features.stride_seconds=1.0 features.layer=res4 ...]
        [features.save_scores=true]

Writes DIR/<video id>.npy (num_windows, D), DIR/<video id>.json (window times), DIR/index.csv and
DIR/failed.csv (with features.save_scores=true also DIR/scores/<video id>.npy, per-window class
probabilities, and DIR/classes.txt); re-running skips finished videos. See videoattn/apps/extract.py.
"""

import sys

from videoattn.apps.extract import extract_features
from videoattn.cli import add_checkpoint_argument, config_parser, exit_on_user_error, parse_config
from videoattn.engine.logger import setup_logging
from videoattn.utils.distributed import distributed_run, launch_rank


def main(argv=None) -> int:
    parser = config_parser("Sliding-window clip features of videos.")
    add_checkpoint_argument(parser)
    parser.add_argument("--input", required=True, help="a video, a folder of videos, or a list (CSV/txt) of videos")
    parser.add_argument("--output", required=True, help="output folder")
    args, cfg = parse_config(parser, argv)
    setup_logging(launch_rank())
    with (
        exit_on_user_error(
            interrupted=f"interrupted; finished videos are kept in {args.output} and a re-run does the rest"
        ),
        distributed_run(cfg, args.output),
    ):
        extract_features(
            cfg, args.input, args.output, args.checkpoint, trust=args.trust_checkpoint, pretrained=args.pretrained
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
