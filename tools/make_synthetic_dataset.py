#!/usr/bin/env python
"""Write the synthetic Kinetics-style dataset (see videoattn/datasets/synthetic.py).

    python tools/make_synthetic_dataset.py --output data/synthetic \
        [--classes 8 --train-per-class 40 --val-per-class 10 --seed 0]

Writes only files of its own names, and replaces only those it wrote itself (a rerun); a dataset's own
train.csv or classes.txt in --output is refused in one line, not replaced.
Its left/right classes change meaning under a horizontal flip: train with data.random_flip=false.
"""

import argparse
import sys
import time

from videoattn.cli import exit_on_user_error
from videoattn.datasets.synthetic import MAX_CLASSES, make_synthetic_dataset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="dataset root to write")
    p.add_argument("--classes", type=int, default=8, help=f"number of classes, 2..{MAX_CLASSES}")
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-seconds", type=float, default=2.2)
    p.add_argument("--max-seconds", type=float, default=3.0)
    p.add_argument("--size-scale", type=float, default=1.0, help="multiplies the frame sizes (~96-160 px)")
    p.add_argument("--workers", type=int, default=0, help="encoding threads (0: one per CPU core)")
    args = p.parse_args(argv)
    start = time.time()
    with exit_on_user_error(distributed=False):  # a file of its names that it did not write: one line, kept
        result = make_synthetic_dataset(
            args.output,
            num_classes=args.classes,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            seed=args.seed,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            size_scale=args.size_scale,
            workers=args.workers,
        )
    print(
        f"wrote {len(result['train'])} train + {len(result['val'])} val videos of {len(result['classes'])} classes "
        f"to {args.output} in {time.time() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
