"""Runs a real tool and records every tensor handed to a torch.distributed collective (used by
tests/engine/test_collectives.py; not a test itself).

    collective_worker.py OUT_PREFIX TOOL [args]    writes OUT_PREFIX.<rank>.json: [[op, device], ...]

TOOL is a script under tools/, run as ``__main__`` (under torchrun in the test).
"""

import atexit
import json
import os
import runpy
import sys

import torch
import torch.distributed as dist

TENSOR_OPS = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce")


def record(prefix: str) -> None:
    seen = []
    for name in TENSOR_OPS:
        real = getattr(dist, name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            for a in list(args) + list(kwargs.values()):
                for t in a if isinstance(a, (list, tuple)) else [a]:
                    if torch.is_tensor(t):
                        seen.append([_name, str(t.device)])
            return _real(*args, **kwargs)

        setattr(dist, name, wrapped)

    @atexit.register
    def write() -> None:
        with open(f"{prefix}.{os.environ.get('RANK', '0')}.json", "w") as f:
            json.dump(seen, f)


if __name__ == "__main__":
    record(sys.argv[1])
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
