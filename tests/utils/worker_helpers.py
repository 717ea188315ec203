"""Task functions for the worker-pool tests (module level: ``spawn`` pickles them by name)."""

import os
import signal
import time


def task(x):
    """x * x; "raise" raises, "hang" never returns, "segfault" kills its own process, "pid" returns the pid."""
    if x == "raise":
        raise ValueError("bad task")
    if x == "hang":
        time.sleep(3600)
    if x == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == "pid":
        return os.getpid()
    return x * x
