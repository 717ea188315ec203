"""Training observability: console logging, ``metrics.jsonl``, TensorBoard and progress display.

Only the main process (rank 0) writes anything; on other ranks every call is a no-op, so the
training loop can call these unconditionally.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

from tqdm import tqdm

from videoattn.utils.io import append_bytes, json_safe

LOG_FORMAT = "[%(asctime)s %(levelname)s rank%(rank)s] %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


class _LogFile(logging.FileHandler):
    """``train.log``; a failed write (disk full) is one line on stderr, once, not a traceback per record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            print(f"warning: cannot write {self.baseFilename}: {sys.exc_info()[1]}", file=sys.stderr, flush=True)


def setup_logging(rank: int, output_dir: Optional[str] = None) -> Callable[[], None]:
    """Log INFO and above to stdout (and ``output_dir/train.log``) on rank 0; only errors elsewhere.

    Returns a function that restores the ``videoattn`` logger as it was (for in-process callers).
    """
    root = logging.getLogger("videoattn")
    saved = (list(root.handlers), root.level, root.propagate)
    for h in saved[0]:
        root.removeHandler(h)
    root.setLevel(logging.INFO if rank == 0 else logging.ERROR)
    root.propagate = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if rank == 0 and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(_LogFile(os.path.join(output_dir, "train.log")))
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        h.addFilter(_RankFilter(rank))
        root.addHandler(h)

    def restore() -> None:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        root.propagate = saved[2]

    return restore


class MetricsWriter:
    """``output_dir/metrics.jsonl`` (one JSON object per row) plus TensorBoard scalars.

    Each row is ``{"kind": "train"|"epoch"|"val", "epoch": ..., "step": ..., **values}``;
    numeric values also go to TensorBoard as ``<kind>/<name>`` at ``step``.
    """

    def __init__(self, output_dir: str, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._file = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self._file = open(self.path, "ab", buffering=0)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def write(self, kind: str, step: int, epoch: float, **values: Any) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "epoch": epoch, "step": step, "time": round(time.time(), 3)}
        row.update(json_safe(values))
        assert self._file is not None
        append_bytes(self._file, (json.dumps(row) + "\n").encode("utf-8"), self.path)  # whole rows only
        if self._tb is not None:
            for k, v in row.items():
                if (
                    k not in ("kind", "epoch", "step", "time")
                    and isinstance(v, (int, float))
                    and not isinstance(v, bool)
                ):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Progress:
    """Iterate with a tqdm bar on rank 0 when stdout is a terminal; otherwise log a plain line
    every ``log_period`` iterations (``set(...)`` supplies what the line/bar shows). ``start``: the
    iterations done before ``iterable``'s first item (a resumed epoch)."""

    def __init__(
        self,
        iterable: Iterable,
        total: int,
        desc: str,
        enabled: bool,
        log_period: int,
        log: logging.Logger,
        start: int = 0,
    ) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.enabled, self.log_period, self.log = enabled, max(1, log_period), log
        self.use_bar = enabled and sys.stdout.isatty()
        self.values: Dict[str, str] = {}
        self._bar: Optional[tqdm] = None
        self._i = self.start = start

    def set(self, **values: Any) -> None:
        self.values = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.values, refresh=False)
        elif self.enabled and (self._i % self.log_period == 0 or self._i == self.total):
            text = " ".join(f"{k}={v}" for k, v in self.values.items())
            self.log.info("%s [%d/%d] %s", self.desc, self._i, self.total, text)

    def __iter__(self) -> Iterator:
        if self.use_bar:
            self._bar = tqdm(
                self.iterable, total=self.total, initial=self.start, desc=self.desc, dynamic_ncols=True, leave=False
            )
            source: Iterable = self._bar
        else:
            source = self.iterable
        try:
            for item in source:
                self._i += 1
                yield item
        finally:
            if self._bar is not None:
                self._bar.close()
