#!/usr/bin/env python
"""Submit training to SLURM through submitit, one task per GPU; ``--local`` runs it here.

    python tools/submit.py --config CFG --nodes N --gpus-per-node G --partition P --time MINUTES \
        [--account A --qos Q --mem 480G --cpus-per-task C --constraint X --comment T] [key=value ...]
    python tools/submit.py --config CFG --local --gpus-per-node 0 --tasks-per-node 2 --time 30 device=cpu

See videoattn/train/submit.py (job folder output_dir/slurm/<job id>/, requeue on time limit).
"""

import sys

from videoattn.train.submit import main

if __name__ == "__main__":
    sys.exit(main())
