#!/usr/bin/env python
"""Train a video model: one process, or one per device under torchrun.

    python tools/train_net.py --config configs/synthetic/I3D_NL_CBAM_R18.yaml [key=value ...]
    python tools/train_net.py --config configs/kinetics400/I3D_NL_R50.yaml --pretrained i3d_r50   # fine-tune
    torchrun --nproc_per_node=2 tools/train_net.py --config CFG [key=value ...]

``train.batch_size`` is the global batch over all processes; see videoattn/engine/train.py.
"""
import os
import sys

from videoattn.cli import (add_pretrained_argument, add_trust_argument, config_parser, exit_on_user_error, parse_config,
                           print_line)
from videoattn.engine.train import train
from videoattn.utils.serialization import CheckpointError


def main(argv=None) -> int:
    parser = config_parser("Train a video model: one process, or one per device under torchrun "
                           "(torchrun --nproc_per_node=N tools/train_net.py --config CFG).")
    add_trust_argument(parser)  # = train.trust_checkpoint=true
    add_pretrained_argument(parser)  # = model.pretrained=NAME
    args, cfg = parse_config(parser, argv)
    cfg.train.trust_checkpoint = cfg.train.trust_checkpoint or args.trust_checkpoint
    if not cfg.train.enable:
        print("train.enable=false: nothing to do")
        return 0
    with exit_on_user_error(distributed=False):  # locked/unwritable output_dir, disk full, timeout, Ctrl-C
        try:
            train(cfg)
        except (ValueError, FloatingPointError, CheckpointError) as e:
            print_line(f"error (rank {os.environ.get('RANK', '0')}): {type(e).__name__}: {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
