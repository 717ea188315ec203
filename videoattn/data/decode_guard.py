"""What every video reader shares: the errors it raises and the time limit on native decode calls."""
from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Optional

from videoattn.utils.errors import OneLineError


class DecodeError(OneLineError):
    """A video cannot be opened or decoded. ``path`` and ``reason`` are attributes."""
    prefix = "video error"

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class TruncatedVideoError(DecodeError):
    """Frames were asked for past the frames that really decode: only ``decoded_frames`` of the
    ``declared_frames`` the container declares decode (frames ``0 .. decoded_frames - 1``)."""

    def __init__(self, path: str, decoded_frames: int, declared_frames: int, fps: float):
        self.decoded_frames, self.declared_frames, self.fps = int(decoded_frames), int(declared_frames), float(fps)
        super().__init__(path, f"truncated: only {self.lost()}")

    def lost(self) -> str:
        """``"61 of 150 declared frames decode (2.03 s of 5.00 s)"``."""
        return (f"{self.decoded_frames} of {self.declared_frames} declared frames decode "
                f"({self.decoded_frames / self.fps:.2f} s of {self.declared_frames / self.fps:.2f} s)")


# ----------------------------------------------------------------------------- time-limited calls
class _DecodeThread:
    """One daemon thread running decode calls (daemon: a stuck call never blocks process exit)."""

    def __init__(self):
        self.pid = os.getpid()
        self.jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        threading.Thread(target=self._run, name="videoattn-decode", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, box, done = self.jobs.get()
            try:
                box.append((True, fn()))
            except BaseException as e:  # handed to the caller
                box.append((False, e))
            done.set()


_THREAD: Optional[_DecodeThread] = None
_THREAD_LOCK = threading.Lock()


def run_with_timeout(fn: Callable, timeout: Optional[float], what: str, path: str):
    """``fn()`` in the decode thread; raise DecodeError if it does not return within ``timeout`` s.

    A timed-out call cannot be killed (it is native code); its thread is abandoned and a fresh
    one serves the next call, so the worker process keeps going.
    """
    global _THREAD
    if not timeout or timeout <= 0:
        return fn()
    with _THREAD_LOCK:
        if _THREAD is None or _THREAD.pid != os.getpid():  # DataLoader workers fork: one per process
            _THREAD = _DecodeThread()
        worker = _THREAD
    box: list = []
    done = threading.Event()
    worker.jobs.put((fn, box, done))
    if not done.wait(timeout):
        with _THREAD_LOCK:
            if _THREAD is worker:
                _THREAD = None
        raise DecodeError(path, f"{what} timed out after {timeout:g} s")
    ok, value = box[0]
    if ok:
        return value
    raise value


def short_reason(e: BaseException, limit: int = 200) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    msg = text[0] if text else type(e).__name__
    return msg if len(msg) <= limit else msg[:limit] + "..."
