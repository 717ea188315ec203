#!/usr/bin/env python
"""Train a video model.

    python tools/train_net.py --config configs/synthetic/I3D_NL_CBAM_R18.yaml [key=value ...]
    torchrun --nproc_per_node=2 tools/train_net.py --config CFG [key=value ...]

``train.batch_size`` is the global batch over all processes; see videoattn/engine/train.py.
"""
import sys

from videoattn.engine.train import main

if __name__ == "__main__":
    sys.exit(main())
