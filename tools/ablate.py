#!/usr/bin/env python
"""Run an ablation grid (variants x seeds): each cell a real train_net run under torchrun, then test_net.

    python tools/ablate.py configs/ablations/example.yaml --output output/ablation [--jobs 2] [--threads 1]
    python tools/ablate.py GRID --output OUT --report-only          # rebuild results.csv / summary.md / summary.png
    python tools/ablate.py GRID --output OUT --executor slurm --partition P --time 120 [--wait]

A rerun skips finished cells and resumes the others. See videoattn/ablation/main.py and docs/ablation.md.
"""

import os
import sys

from videoattn.ablation.main import main

if __name__ == "__main__":
    sys.exit(main(tools_dir=os.path.dirname(os.path.abspath(__file__))))
