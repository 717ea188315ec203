#!/usr/bin/env python
"""Linear probe (multinomial logistic regression with L2) on tools/extract_features.py's output.

    python tools/linear_probe.py --config CFG --features DIR [DIR ...] --train-annotations CSV \
        (--val-annotations CSV | --folds K) [--test-annotations CSV] --output DIR \
        [--per video|clip] [--l2 1e-4,1e-3,...] [--allow-missing] [--checkpoint BACKBONE | --pretrained NAME]

Annotations are read as training reads a split (against data.root, classes from data.classes_file
or the training labels). Writes DIR/{probe.json, head.npz, predictions.csv, logits.npz, classes.txt}
and, with the backbone the features came from, DIR/probe.pyth for test_net and predict
(model.num_classes = the probe's classes). See videoattn/apps/probe.py and docs/probe.md.
"""

import sys

from videoattn.apps.probe import ProbeOptions, run_probe
from videoattn.apps.probe_fit import DEFAULT_L2_GRID
from videoattn.cli import add_pretrained_argument, add_trust_argument, config_parser, exit_on_user_error, parse_config
from videoattn.engine.logger import setup_logging
from videoattn.utils.errors import UsageError


def l2_grid(text: str):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--l2 {text}: expected comma-separated numbers, e.g. 1e-4,1e-3,1e-2") from None


def main(argv=None) -> int:
    parser = config_parser("Linear probe on extracted features; optionally a checkpoint with the probe as its head.")
    parser.add_argument("--features", nargs="+", required=True, help="extract_features output folder(s)")
    parser.add_argument("--train-annotations", required=True, help="training split (as data.train_split)")
    parser.add_argument("--val-annotations", default="", help="validation split: picks the L2 weight")
    parser.add_argument("--test-annotations", default="", help="test split: scored once, with the picked probe")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--per", default="video", help="training samples: video (mean of its windows) or clip")
    parser.add_argument("--folds", type=int, default=0, help="pick the L2 weight by K-fold on train (no val split)")
    parser.add_argument("--l2", default="", help="comma-separated L2 weights to try (default 1e-5..10, half decades)")
    parser.add_argument("--allow-missing", action="store_true", help="leave out annotation rows without features")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--checkpoint", default="", help="the backbone checkpoint the features came from")
    add_pretrained_argument(group, "the public weights the features came from")
    add_trust_argument(parser)
    args, cfg = parse_config(parser, argv)
    setup_logging(0)
    with exit_on_user_error(distributed=False):
        opts = ProbeOptions(
            features=args.features,
            train=args.train_annotations,
            output=args.output,
            val=args.val_annotations,
            test=args.test_annotations,
            per=args.per,
            folds=args.folds,
            l2_grid=l2_grid(args.l2) if args.l2 else DEFAULT_L2_GRID,
            allow_missing=args.allow_missing,
            checkpoint=args.checkpoint,
            pretrained=args.pretrained,
            trust=args.trust_checkpoint,
        )
        run_probe(cfg, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
