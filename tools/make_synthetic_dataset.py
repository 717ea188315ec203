#!/usr/bin/env python
"""Write a synthetic Kinetics-style dataset: --kind motion (the demo's time-reversed motion classes,
videoattn/datasets/synthetic.py) or relation (2 classes decided by a relation between two distant
objects at distant times, among look-alike distractors: videoattn/datasets/synthetic_relation.py).

    python tools/make_synthetic_dataset.py --output data/synthetic \
        [--classes 8 --train-per-class 40 --val-per-class 10 --seed 0]
    python tools/make_synthetic_dataset.py --kind relation --output data/relation \
        --train-per-class 100 --val-per-class 25 --test-per-class 100

Writes only files of its own names, and replaces only those it wrote itself (a rerun); a dataset's own
train.csv or classes.txt in --output is refused in one line, not replaced.
The motion kind's left/right classes change meaning under a horizontal flip: train it with
data.random_flip=false.
"""

import argparse
import sys
import time

from videoattn.cli import exit_on_user_error
from videoattn.datasets.synthetic import MAX_CLASSES, make_synthetic_dataset
from videoattn.datasets.synthetic_relation import RELATION_SECONDS, make_relation_dataset
from videoattn.utils.errors import UsageError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="dataset root to write")
    p.add_argument("--kind", choices=["motion", "relation"], default="motion", help="which task (default motion)")
    p.add_argument("--classes", type=int, help=f"number of classes: motion 2..{MAX_CLASSES} (8), relation 2")
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--test-per-class", type=int, default=0, help="videos of a test split (0: none, test on val)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-seconds", type=float, help=f"motion 2.2, relation {RELATION_SECONDS[0]}")
    p.add_argument("--max-seconds", type=float, help=f"motion 3.0, relation {RELATION_SECONDS[1]}")
    p.add_argument("--size-scale", type=float, default=1.0, help="multiplies the frame sizes (~64-160 px)")
    p.add_argument("--workers", type=int, default=0, help="encoding threads (0: one per CPU core)")
    p.add_argument("--distractors", type=int, help="relation only: look-alike distractors per video (2)")
    args = p.parse_args(argv)
    relation = args.kind == "relation"
    seconds = RELATION_SECONDS if relation else (2.2, 3.0)
    common = dict(
        num_classes=args.classes or (2 if relation else 8),
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
        min_seconds=seconds[0] if args.min_seconds is None else args.min_seconds,
        max_seconds=seconds[1] if args.max_seconds is None else args.max_seconds,
        size_scale=args.size_scale,
        workers=args.workers,
    )
    start = time.time()
    with exit_on_user_error(distributed=False):  # a file of its names that it did not write: one line, kept
        if relation:
            distractors = 2 if args.distractors is None else args.distractors
            result = make_relation_dataset(args.output, num_distractors=distractors, **common)
        elif args.distractors is not None:
            raise UsageError("--distractors is an option of --kind relation; the motion kind has none")
        else:
            result = make_synthetic_dataset(args.output, **common)
    test = f" + {len(result['test'])} test" if "test" in result else ""
    print(
        f"wrote {len(result['train'])} train + {len(result['val'])} val{test} videos of {len(result['classes'])} "
        f"{args.kind} classes to {args.output} in {time.time() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
