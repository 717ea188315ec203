"""Stop a distributed job cleanly on a SLURM warning signal: every rank at the same iteration.

    with PreemptionHandler() as pre:            # SIGUSR1 and SIGTERM only set a flag from now on
        for it, batch in enumerate(loader):
            step(batch)
            if pre.should_stop(device):         # a collective: call it on every rank, same iterations
                save_checkpoint(...)            # all ranks are here, at the same iteration
                return pre.exit_code            # 75: "requeue me"; 143: terminated
    # the previous handlers are back (submitit's, or the defaults)

The handler only records the signal number (nothing that could take a lock, allocate a tensor or
write a file), so it is safe however deep inside the training step the signal lands. Ranks can get
the signal at different times, or only some of them at all (``scancel --signal=USR1`` reaches every
task, a node-local event only that node): :meth:`PreemptionHandler.should_stop` all-reduces the
local flag (MAX) so that every rank sees the same answer at the same iteration boundary.

Exit status and requeueing (SLURM itself never requeues a job because of its exit status, unless
the administrators set ``RequeueExit`` in slurm.conf):

* ``REQUEUE_EXIT_CODE`` (75, ``EX_TEMPFAIL``) after ``SIGUSR1``/``SIGUSR2``: the time limit is near
  (``#SBATCH --signal=USR1@120``) and a checkpoint was written; the job should run again.
  Under plain ``sbatch`` + ``srun`` the batch script requeues on it::

      srun python tools/train_net.py --config CFG
      [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"

  Under ``tools/submit.py`` (submitit) rank 0 hands the signal on to submitit's own handler, which
  dumps the callable's ``checkpoint()`` (the same training callable), runs ``scontrol requeue``
  (the local executor: exits 144, which its controller reruns) and exits.
* ``TERMINATED_EXIT_CODE`` (143 = 128 + SIGTERM) after ``SIGTERM`` only: SLURM is preempting or
  cancelling the job. Nothing asks for a requeue (``scancel`` must stay final; a preempted job is
  requeued by SLURM itself when the partition's ``PreemptMode=REQUEUE``), as submitit does.

submitit installs its own handler for its preemption signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by
default, USR1 under tools/submit.py) and just logs ``SIGTERM``. While a ``PreemptionHandler`` is
installed it replaces them, so submitit's handler cannot exit rank 0 in the middle of a collective
(which left the other ranks hanging until the process-group timeout); :meth:`restore` puts them back.

DataLoader worker processes get the same signals (SLURM signals every process of the step):
call :func:`ignore_signals` in ``worker_init_fn`` so that they keep loading while the main process
decides.
"""

from __future__ import annotations

import signal
import threading
from typing import Iterable, Optional, Sequence

import torch

from videoattn.utils.distributed import all_reduce_

REQUEUE_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, try again"
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
DEFAULT_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
_STOP, _REQUEUE = 1, 2  # local flag levels; MAX over ranks: any requeue signal wins


class PreemptionHandler:
    """Flag-only handlers for ``signals`` (default SIGUSR1, SIGTERM), installed in the main thread.

    ``received``: the first signal number this process got (None if none). ``should_stop(device)``
    agrees across ranks; afterwards ``exit_code`` is the status to exit with (the same on all ranks).
    """

    def __init__(
        self, signals: Sequence[int] = DEFAULT_SIGNALS, requeue_signals: Iterable[int] = REQUEUE_SIGNALS
    ) -> None:
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.requeue_signals = frozenset(signal.Signals(s) for s in requeue_signals)
        self.received: Optional[int] = None
        self._level = 0  # written only by the handler: 0, _STOP or _REQUEUE
        self._agreed = 0  # the all-rank MAX of the levels at the last should_stop()
        self._previous: dict = {}

    def _on_signal(self, signum: int, frame) -> None:  # noqa: ARG002 (signal handler signature)
        """Record the signal; nothing else (no I/O, no locks, no allocation of note)."""
        if self.received is None:
            self.received = signum
        level = _REQUEUE if signum in self.requeue_signals else _STOP
        if level > self._level:
            self._level = level

    def install(self) -> "PreemptionHandler":
        """Replace the handlers of ``self.signals``, remembering the previous ones."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "PreemptionHandler.install() must run in the main thread (Python delivers signals there only)"
            )
        if self._previous:
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> "PreemptionHandler":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    @property
    def requested(self) -> bool:
        """This process got a signal (local; not agreed with the other ranks)."""
        return self._level > 0

    @property
    def level(self) -> int:
        """This process's flag as a number to all-reduce (MAX) with others' (0: no signal); pass
        the agreed maximum to :meth:`agree`. Lets a loop share an all-reduce it does anyway."""
        return self._level

    def agree(self, agreed_level: int) -> bool:
        """Record the all-rank maximum of :attr:`level`; returns whether to stop (as :meth:`should_stop`)."""
        self._agreed = int(agreed_level)
        return self._agreed > 0

    def should_stop(self, device: Optional[torch.device] = None) -> bool:
        """Whether any rank got a signal: an all-reduce (MAX) of the local flag over all ranks.

        A collective: every rank must call it at the same iterations. ``device``: where the
        one-element tensor lives (the run's device; a CPU tensor also works under NCCL, see
        :func:`videoattn.utils.distributed.all_reduce_`). In a single process this is the local flag.
        """
        flag = torch.tensor([self._level], dtype=torch.int32, device=device)
        return self.agree(int(all_reduce_(flag, "max").item()))

    @property
    def exit_code(self) -> int:
        """0 before a stop was agreed; then REQUEUE_EXIT_CODE if any rank got a requeue signal,
        else TERMINATED_EXIT_CODE. The same on every rank (it comes from the all-reduce)."""
        if self._agreed == 0:
            return 0
        return REQUEUE_EXIT_CODE if self._agreed >= _REQUEUE else TERMINATED_EXIT_CODE


def ignore_signals(signals: Sequence[int] = DEFAULT_SIGNALS + (signal.SIGUSR2,)) -> None:
    """Ignore ``signals`` in this process (for DataLoader workers: ``worker_init_fn``), so that the
    main process alone decides when to stop; workers end with it."""
    for s in signals:
        signal.signal(s, signal.SIG_IGN)
