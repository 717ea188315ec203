#!/usr/bin/env python
"""Benchmarks; each prints ratios against named baselines measured in the same run.

python tools/benchmark.py model      # I3D R50 vs pytorchvideo i3d_r50; SDPA vs explicit non-local
python tools/benchmark.py attention  # non-local kinds (full SDPA / explicit, local, axial, linear): time, memory
python tools/benchmark.py data       # Kinetics recipe: raw vs prepared, vs peers (per core), GOP sweep
python tools/benchmark.py train      # demo preset clips/s and data-wait, 1 and 2 processes
python tools/benchmark.py eval       # multi-view test views/s
python tools/benchmark.py features   # feature extraction video-seconds/s
python tools/benchmark.py export     # onnxruntime (CPU) vs eager PyTorch per clip, 1 and 2 threads;
                                     #   --check-all: every preset exported and compared with eager
python tools/benchmark.py gpu        # GPU train step, non-local paths, train/test/extract on a GPU
                                     #   (--device cpu --quick: the same code, tiny, on the CPU)
"""

import importlib
import sys

SUITES = {
    "model": "model",
    "attention": "attention",
    "data": "data",
    "train": "train",
    "eval": "evaluation",
    "features": "evaluation",
    "gpu": "gpu",
    "export": "export",
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(SUITES)}}} [options]")
    module = importlib.import_module(f"benchmarks.{SUITES[sys.argv[1]]}")  # tools/benchmarks/
    sys.exit(module.main([sys.argv[1]] + sys.argv[2:]))
