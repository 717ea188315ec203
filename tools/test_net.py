#!/usr/bin/env python
"""Multi-view testing of a checkpoint; also under torchrun or srun (one task per GPU).

    python tools/test_net.py --config CFG --checkpoint PATH [key=value ...]
    python tools/test_net.py --config configs/kinetics400/I3D_R50.yaml --pretrained i3d_r50
    torchrun --standalone --nproc_per_node=2 tools/test_net.py --config CFG --checkpoint PATH
    srun --ntasks-per-node=8 --gpus-per-node=8 python tools/test_net.py --config CFG --checkpoint PATH

Writes OUTPUT_DIR/test/{metrics.json, per_class.csv, confusion_matrix.csv, confusion_matrix.png,
predictions.csv[, view_logits.npz]}. See videoattn/evaluation/tester.py.
"""

import os
import sys

from videoattn.cli import add_checkpoint_argument, config_parser, exit_on_user_error, parse_config
from videoattn.engine.logger import setup_logging
from videoattn.evaluation.tester import run_test
from videoattn.utils.distributed import distributed_run, launch_rank


def main(argv=None) -> int:
    parser = config_parser("Multi-view clip/video-level testing of a checkpoint.")
    add_checkpoint_argument(parser)
    args, cfg = parse_config(parser, argv)
    setup_logging(launch_rank())
    with (
        exit_on_user_error(interrupted="interrupted; test results are written only when a test completes"),
        distributed_run(cfg, os.path.join(cfg.output_dir, "test")),
    ):
        run_test(cfg, args.checkpoint, trust=args.trust_checkpoint, pretrained=args.pretrained)
    return 0


if __name__ == "__main__":
    sys.exit(main())
