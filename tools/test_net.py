#!/usr/bin/env python
"""Multi-view testing of a checkpoint; also under torchrun.

    python tools/test_net.py --config CFG --checkpoint PATH [key=value ...]
    torchrun --standalone --nproc_per_node=2 tools/test_net.py --config CFG --checkpoint PATH

Writes OUTPUT_DIR/test/{metrics.json, per_class.csv, confusion_matrix.csv, confusion_matrix.png,
predictions.csv[, view_logits.npz]}. See videoattn/engine/tester.py.
"""
import os
import sys

from videoattn.config.cli import config_parser, parse_config
from videoattn.engine.checkpoint import CheckpointError
from videoattn.engine.distributed import cleanup
from videoattn.engine.logger import setup_logging
from videoattn.engine.tester import run_test


def main(argv=None) -> int:
    parser = config_parser("Multi-view clip/video-level testing of a checkpoint.")
    parser.add_argument("--checkpoint", default="", help="checkpoint file (default: test.checkpoint_file, else "
                        "OUTPUT_DIR/checkpoints/checkpoint_best.pyth, else the newest epoch checkpoint there)")
    args, cfg = parse_config(parser, argv)
    setup_logging(int(os.environ.get("RANK", "0")))
    try:
        run_test(cfg, args.checkpoint)
    except CheckpointError as e:
        sys.exit(f"checkpoint error: {e}")
    except (FileNotFoundError, ValueError) as e:  # annotation/config problems (AnnotationError is a ValueError)
        sys.exit(f"error: {e}")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
