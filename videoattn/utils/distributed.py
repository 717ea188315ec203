"""Process-group set-up (NCCL on CUDA, gloo on CPU) under torchrun, srun, submitit or none, and
small collective helpers.

The launcher is detected from the environment (:mod:`videoattn.utils.launcher`: torchrun's
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, srun's ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``
with the master from the node list, submitit's local executor); its ``env://`` variables are
exported before ``init_process_group``. Under srun and submitit the processes meet through
:mod:`videoattn.utils.rendezvous` (rank 0 says whom it waits for, Ctrl-C works, a one-line
timeout). Works unchanged in a plain single process.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from videoattn.utils.errors import OneLineError, UsageError
from videoattn.utils.launcher import LauncherError, LaunchInfo, detect_launcher, export_env
from videoattn.utils.lock import LockError, folder_lock
from videoattn.utils.outputs import OutputError, claim_outputs
from videoattn.utils.rendezvous import open_store, report_interval

logger = logging.getLogger(__name__)
SINGLE = LaunchInfo("single", 0, 1, 0, "", 0)


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    launch: LaunchInfo = SINGLE  # the launcher detected and its variables

    @property
    def launcher(self) -> str:
        """torchrun | srun | submitit-local | single"""
        return self.launch.launcher

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> this process's device: CUDA device ``local_rank``, or 0 when
    the process sees one GPU only (SLURM's ``--gpus-per-task=1`` / ``--gpu-bind``)."""
    if not _uses_cuda(device):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count == 1:
        return torch.device("cuda", 0)
    if local_rank >= count:
        raise UsageError(
            f"local rank {local_rank} has no GPU: this process sees {count}; start one process per "
            f"GPU (--ntasks-per-node / --nproc_per_node = GPUs per node)"
        )
    return torch.device("cuda", local_rank)


def _uses_cuda(device: str) -> bool:
    return torch.cuda.is_available() if device == "auto" else device == "cuda"


def launch_world_size() -> int:
    """The number of processes this launch starts (before the process group exists), from the
    launcher's variables; a one-line :class:`LauncherError` (a ValueError) if they are inconsistent."""
    return detect_launcher(check_gpus=False).world_size


def launch_rank() -> int:
    """This process's rank before the process group exists (for logging set-up); 0 if the launcher
    variables are unusable (:func:`init_distributed` then reports them)."""
    try:
        return detect_launcher(check_gpus=False).rank
    except LauncherError:
        return 0


def per_process_batch(global_batch: int, key: str, world_size: Optional[int] = None) -> int:
    """``global_batch // world_size``; a one-line UsageError naming ``key`` unless it divides."""
    world = world_size or get_world_size()
    if global_batch < world or global_batch % world:
        raise UsageError(
            f"{key}={global_batch} is the global batch and must be a positive multiple of the "
            f"number of processes ({world}); e.g. {key}={max(1, global_batch // world) * world}"
        )
    return global_batch // world


def launch_and_device(device: str = "auto") -> Tuple[LaunchInfo, torch.device]:
    """The launcher detected (its ``env://`` variables exported) and this process's device, before
    any process group exists. Raises :class:`LauncherError` (one line) on partial or inconsistent
    launcher variables."""
    launch = detect_launcher(check_gpus=_uses_cuda(device))
    export_env(launch)  # env:// (and code that reads RANK / WORLD_SIZE) works under every launcher
    return launch, resolve_device(device, launch.local_rank)


def init_distributed(device: str = "auto", timeout_s: float = 1800, report_s: Optional[float] = None) -> DistInfo:
    """Initialise the default process group from the launcher's variables, once.

    ``device``: auto | cpu | cuda. One CUDA device per process, chosen by the local rank.
    ``timeout_s``: how long the rendezvous and a collective wait for the other processes
    (``dist_timeout_minutes``). ``report_s``: seconds between rank 0's "waiting for N more
    processes" lines (default: :func:`videoattn.utils.rendezvous.report_interval`).
    Raises :class:`LauncherError` (one line) on partial or inconsistent launcher variables, and
    :class:`RendezvousError` (one line) when a process never comes.
    """
    launch, dev = launch_and_device(device)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if launch.world_size > 1 and not dist.is_initialized():
        group = dict(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": dev} if use_cuda else {}),
        )
        if launch.launcher == "torchrun":  # its agent gathered every worker before starting them, and hosts the store
            dist.init_process_group(init_method="env://", **group)
        else:  # srun / submitit-local: wait for the others in Python (heard, Ctrl-C, one-line timeout)
            store = open_store(launch, timeout_s, report_interval() if report_s is None else report_s)
            dist.init_process_group(store=store, rank=launch.rank, world_size=launch.world_size, **group)
    return DistInfo(launch.rank, launch.world_size, launch.local_rank, dev, launch)


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (a one-element list in a single process)."""
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum`` | ``max`` | ``min``) of ``t`` over all processes; a CPU tensor
    also works under NCCL (which reduces only CUDA tensors: it makes a round trip through the
    current device). No-op in a single process."""
    if get_world_size() == 1:
        return t
    red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    if dist.get_backend() == "nccl" and t.device.type == "cpu":
        buf = t.cuda()
        dist.all_reduce(buf, op=red)
        t.copy_(buf.cpu())
    else:
        dist.all_reduce(t, op=red)
    return t


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class CollectiveTimeout(OneLineError):
    """A collective operation waited ``dist_timeout_minutes`` for a process that stalled or died."""


@contextlib.contextmanager
def named_timeouts(timeout_minutes: float) -> Iterator[None]:
    """Re-raise a collective's timeout (gloo: ``RuntimeError: ... Timed out waiting 3000ms ...``) as a
    one-line :class:`CollectiveTimeout` that names the config key."""
    try:
        yield
    except RuntimeError as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if get_world_size() == 1 or isinstance(e, OneLineError) or not re.search(r"timed? ?out", text, re.I):
            raise
        text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # gloo's "[path/to/source.cc:78] " prefix
        raise CollectiveTimeout(
            f"rank {get_rank()} waited dist_timeout_minutes={timeout_minutes:g} for the other "
            f"processes, one of which stalled or died ({text})"
        ) from None


def _on_main_process(action: Callable[[], Any], error_type: type) -> None:
    """Run ``action`` on rank 0 only; if it raises, every rank raises alike (the outcome is
    broadcast, so no rank is left waiting in a collective): rank 0 its own error, the others
    ``error_type`` with its message."""
    error = None
    if is_main_process():
        try:
            action()
        except Exception as e:  # noqa: BLE001 -- every outcome must reach the other ranks
            error = e
    message = broadcast_object(None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise error_type(message)


@contextlib.contextmanager
def main_process_lock(folder: str) -> Iterator[None]:
    """Rank 0 holds :func:`videoattn.utils.lock.folder_lock` on ``folder`` for the ``with`` block
    (``folder`` may be shared between nodes); if it cannot, every rank raises the same one-line
    error."""
    with contextlib.ExitStack() as stack:
        _on_main_process(lambda: stack.enter_context(folder_lock(folder)), LockError)
        yield


def main_process_claim(folder: str, tool: str, names: Iterable[str], hint: str = "use another --output") -> None:
    """Rank 0 claims ``names`` in ``folder`` (:func:`videoattn.utils.outputs.claim_outputs`); a refusal
    is raised on every rank alike."""
    _on_main_process(lambda: claim_outputs(folder, tool, names, hint), OutputError)


@contextlib.contextmanager
def distributed_run(cfg, lock_folder: str) -> Iterator[DistInfo]:
    """What every tool does around its work: log the launcher detected, initialise the process
    group with the ``dist_timeout_minutes`` timeout (saying whom it waits for), lock ``lock_folder``
    (:func:`main_process_lock`), name that key when a collective times out, and tear the group
    down at the end."""
    minutes = cfg.dist_timeout_minutes
    launch, device = launch_and_device(cfg.device)
    logger.info("%s, device %s", launch.describe(), device)  # before the wait for the other processes
    info = init_distributed(cfg.device, timeout_s=60 * minutes)
    try:
        with main_process_lock(lock_folder), named_timeouts(minutes):
            yield info
    finally:
        cleanup()
