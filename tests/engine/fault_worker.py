"""Runs a real tool with one injected fault (used by tests/engine/test_train_faults.py; not a test itself).

    fault_worker.py enospc NAME K TOOL [args]            the first file opened for writing whose name
        contains NAME gets half of its K-th write (0-based), then ENOSPC ("No space left on device")
    fault_worker.py stall RANK SECONDS MARKER TOOL [args]  on rank RANK, training's first all-reduce
        sleeps SECONDS (a stalled, not a dead, process) after creating the file MARKER
    fault_worker.py kill_after_saves N TOOL [args]       SIGKILL right after the (N+1)-th numpy.save
    fault_worker.py signal_at_update RANKS K SIG TOOL [args]  on the ranks RANKS ("1", "0,1"), a real
        signal SIG (USR1, TERM) to this process right after its K-th optimizer update (counted from 1
        in this process), i.e. in the middle of the epoch between two update boundaries
    fault_worker.py signal_in_eval RANKS SIG TOOL [args]  the signal as the first validation starts
    fault_worker.py signal_in_write NAME SIG TOOL [args]  the signal halfway through the first write
        to the first file opened for writing whose name contains NAME (then the write goes on)

TOOL is a script under tools/, run as ``__main__`` with the remaining arguments (also under torchrun).
"""

import builtins
import errno
import io
import os
import runpy
import signal
import sys
import time


class FullDisk(io.FileIO):
    """A real file whose ``fail_at``-th write stores half of its bytes and then fails with ENOSPC."""

    fail_at = 0

    def write(self, data) -> int:
        self.writes = getattr(self, "writes", 0) + 1
        if self.writes - 1 < self.fail_at:
            return super().write(data)
        view = memoryview(data)
        super().write(view[: len(view) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fault_open_once(name: str, modes: str, make):
    """An ``open`` whose first call writing (a mode holding one of ``modes``) a file whose name
    contains ``name`` returns ``make(file, mode)``; every other call is the real ``open``."""
    armed = [True]

    def fault_open(file, mode="r", *args, **kwargs):
        if armed[0] and isinstance(file, str) and name in os.path.basename(file) and any(c in mode for c in modes):
            armed[0] = False
            return make(file, mode.replace("b", "").replace("t", ""))
        return builtins.open(file, mode, *args, **kwargs)

    return fault_open


def inject_enospc(name: str, fail_at: int) -> None:
    import videoattn.engine.logger
    import videoattn.utils.io

    def full_disk(file, mode):
        f = FullDisk(file, mode)
        f.fail_at = fail_at
        return f

    fault_open = _fault_open_once(name, "wa", full_disk)
    # The modules that write checkpoints / config.yaml (atomic writes) and metrics.jsonl look up
    # ``open`` in their own globals first.
    videoattn.utils.io.open = fault_open
    videoattn.engine.logger.open = fault_open


def inject_stall(rank: int, seconds: float, marker: str) -> None:
    """On rank ``rank``, the first all-reduce (training's first update) waits ``seconds`` first."""
    if int(os.environ.get("RANK", "0")) != rank:
        return
    import torch.distributed as dist

    real = dist.all_reduce
    armed = [True]

    def stalled(*args, **kwargs):
        if armed[0]:
            armed[0] = False
            open(marker, "w").close()
            time.sleep(seconds)
        return real(*args, **kwargs)

    dist.all_reduce = stalled


def inject_kill_after(count: int) -> None:
    """SIGKILL this process right after its ``count + 1``-th ``numpy.save`` (a feature file's temp
    file is then complete but not yet renamed into place)."""
    import signal

    import numpy as np

    real, calls = np.save, [0]

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        calls[0] += 1
        if calls[0] > count:
            os.kill(os.getpid(), signal.SIGKILL)

    np.save = save_then_die


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))  # exported by init_distributed under every launcher


def _send(sig: str) -> None:
    os.kill(os.getpid(), getattr(signal, "SIG" + sig))


def inject_signal_at_update(ranks: str, k: int, sig: str) -> None:
    import videoattn.train.loop as train

    real, calls = train._update, [0]

    def update_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == k and str(_rank()) in ranks.split(","):
            _send(sig)

    train._update = update_then_signal


def inject_signal_in_eval(ranks: str, sig: str) -> None:
    import videoattn.train.loop as train

    real, armed = train.evaluate_clips, [True]

    def signal_then_evaluate(*args, **kwargs):
        if armed[0] and str(_rank()) in ranks.split(","):
            armed[0] = False
            _send(sig)
        return real(*args, **kwargs)

    train.evaluate_clips = signal_then_evaluate


class SignalledWrite(io.FileIO):
    """A real file whose first write is interrupted halfway by the signal ``sig`` (and then goes on)."""

    sig = "USR1"

    def write(self, data) -> int:
        if getattr(self, "sent", False):
            return super().write(data)
        self.sent = True
        view = memoryview(data)
        n = super().write(view[: len(view) // 2])
        _send(self.sig)
        return n + super().write(view[len(view) // 2 :])


def inject_signal_in_write(name: str, sig: str) -> None:
    import videoattn.utils.io

    def signalled(file, mode):
        f = SignalledWrite(file, mode)
        f.sig = sig
        return f

    videoattn.utils.io.open = _fault_open_once(name, "w", signalled)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "enospc":
        inject_enospc(sys.argv[2], int(sys.argv[3]))
        tool_args = sys.argv[4:]
    elif mode == "stall":
        inject_stall(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        tool_args = sys.argv[5:]
    elif mode == "kill_after_saves":
        inject_kill_after(int(sys.argv[2]))
        tool_args = sys.argv[3:]
    elif mode == "signal_at_update":
        inject_signal_at_update(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        tool_args = sys.argv[5:]
    elif mode == "signal_in_eval":
        inject_signal_in_eval(sys.argv[2], sys.argv[3])
        tool_args = sys.argv[4:]
    elif mode == "signal_in_write":
        inject_signal_in_write(sys.argv[2], sys.argv[3])
        tool_args = sys.argv[4:]
    else:
        sys.exit(f"unknown mode {mode}")
    sys.argv = tool_args
    runpy.run_path(tool_args[0], run_name="__main__")
