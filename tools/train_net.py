#!/usr/bin/env python
"""Train a video model: one process, or one per device under torchrun or srun.

    python tools/train_net.py --config configs/synthetic/I3D_NL_CBAM_R18.yaml [key=value ...]
    python tools/train_net.py --config configs/kinetics400/I3D_NL_R50.yaml --pretrained i3d_r50   # fine-tune
    torchrun --nproc_per_node=2 tools/train_net.py --config CFG [key=value ...]
    srun --ntasks-per-node=8 --gpus-per-node=8 python tools/train_net.py --config CFG [key=value ...]

``train.batch_size`` is the global batch over all processes; see videoattn/train/loop.py.
Exit status: 0 done; 1 error (one line); 130 Ctrl-C; after SIGUSR1 (SLURM's warning before the
time limit) 75 = "requeue me" and after SIGTERM 143, both with a checkpoint written that a re-run
resumes from (see videoattn/utils/preemption.py).
"""

import sys

from videoattn.cli import (
    add_pretrained_argument,
    add_trust_argument,
    config_parser,
    exit_on_user_error,
    parse_config,
    print_line,
)
from videoattn.train.loop import train
from videoattn.utils.distributed import launch_rank
from videoattn.utils.errors import OneLineError
from videoattn.utils.serialization import CheckpointError

# User errors named with their rank and type (each rank may meet its own): a bad setting, annotation
# or launcher variable (ValueError), a non-finite loss (FloatingPointError), unusable weights.
PER_RANK = (ValueError, FloatingPointError, CheckpointError)


def main(argv=None) -> int:
    parser = config_parser(
        "Train a video model: one process, or one per device under torchrun or srun "
        "(torchrun --nproc_per_node=N tools/train_net.py --config CFG)."
    )
    add_trust_argument(parser)  # = train.trust_checkpoint=true
    add_pretrained_argument(parser)  # = model.pretrained=NAME
    args, cfg = parse_config(parser, argv)
    cfg.train.trust_checkpoint = cfg.train.trust_checkpoint or args.trust_checkpoint
    if not cfg.train.enable:
        print("train.enable=false: nothing to do")
        return 0
    with exit_on_user_error(distributed=False):  # locked/unwritable output_dir, disk full, timeout, Ctrl-C
        try:
            return train(cfg).exit_code  # 75 / 143: stopped on a signal, checkpoint written
        except OneLineError as e:
            if not isinstance(e, PER_RANK):  # a locked or unwritable output, a download, a timeout: "error: ..."
                raise
            print_line(f"error (rank {launch_rank()}): {type(e).__name__}: {e}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
