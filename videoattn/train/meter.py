"""Bookkeeping for the training loop: running sums that cost no host sync until they are read,
and a clock of the time spent waiting for data.

Tensor values (a loss, a count of correct predictions) are summed on their device; plain numbers
(clips, batches) on the host. :meth:`Meter.read` sums every value over the ranks in one
all-reduce on the run's device and returns floats: the only sync point.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import torch

from videoattn.utils.distributed import all_reduce_


class Meter:
    """Named sums over an epoch or a logging window. Every rank must add the same names."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self._tensors: Dict[str, torch.Tensor] = {}
        self._numbers: Dict[str, float] = {}

    def add(self, **values) -> None:
        """``values``: 0-d tensors on ``device`` (kept there) or Python numbers."""
        for name, v in values.items():
            if torch.is_tensor(v):
                v = v.detach().to(torch.float64)
                self._tensors[name] = self._tensors[name] + v if name in self._tensors else v
            else:
                self._numbers[name] = self._numbers.get(name, 0.0) + float(v)

    def all_finite(self, name: str) -> bool:
        """Whether the sum ``name`` is finite on every rank (one all-reduce of a flag, one sync)."""
        return self.all_finite_and_max(name)[0]

    def all_finite_and_max(self, name: str, *flags: int) -> Tuple[bool, List[int]]:
        """Whether the sum ``name`` is finite on every rank, and the maximum over the ranks of each of
        ``flags`` (small non-negative ints, e.g. "a preemption signal arrived"): one all-reduce."""
        local = torch.tensor([0.0, *flags], dtype=torch.float32, device=self.device)
        local[0] = (~torch.isfinite(self._tensors[name])).to(torch.float32)
        agreed = all_reduce_(local, "max").tolist()
        return agreed[0] == 0, [int(v) for v in agreed[1:]]

    def state_dict(self) -> dict:
        """This rank's sums (tensors and numbers), for a mid-epoch checkpoint."""
        return {"tensors": dict(self._tensors), "numbers": dict(self._numbers)}

    def load_state_dict(self, state: dict) -> None:
        self._tensors = {k: v.to(self.device) for k, v in state["tensors"].items()}
        self._numbers = {k: float(v) for k, v in state["numbers"].items()}

    def read(self) -> Dict[str, float]:
        """Every sum, added over all ranks."""
        names = sorted(self._tensors) + sorted(self._numbers)
        values = [self._tensors[n].reshape(()) for n in sorted(self._tensors)]
        values += [
            torch.tensor(self._numbers[n], dtype=torch.float64, device=self.device) for n in sorted(self._numbers)
        ]
        total = all_reduce_(torch.stack(values).to(self.device), "sum")
        return dict(zip(names, total.tolist()))


class Clock:
    """Host wall time of an epoch and of the current logging window, and how much of it was spent
    waiting for the loader (no device sync: what the main process waited for)."""

    def __init__(self):
        self.start = self.window_start = self._waiting_since = time.perf_counter()
        self.data = self.window_data = 0.0

    def wait_for_batch(self) -> None:
        self._waiting_since = time.perf_counter()

    def got_batch(self) -> None:
        self.data += time.perf_counter() - self._waiting_since

    def elapsed(self) -> Tuple[float, float]:
        """(s since the epoch started, s of it spent waiting for data)."""
        return time.perf_counter() - self.start, self.data

    def resume(self, elapsed: float, data: float) -> None:
        """Continue an epoch that already took ``elapsed`` s (``data`` s waiting) in an earlier run."""
        self.start -= elapsed
        self.data += data
        self.window_data = self.data

    def window(self) -> Tuple[float, float]:
        """(elapsed s, data-wait s) of the window since the last call; starts the next window."""
        now = time.perf_counter()
        out = (max(now - self.window_start, 1e-9), self.data - self.window_data)
        self.window_start, self.window_data = now, self.data
        return out
