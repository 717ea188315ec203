"""Which launcher started this process (torchrun, srun, submitit's local executor, or none), and the
``env://`` variables that ``torch.distributed.init_process_group`` needs, whatever the launcher.

    info = detect_launcher()      # reads os.environ; raises LauncherError on partial/inconsistent variables
    export_env(info)              # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK for env://
    dist.init_process_group(backend)

Detection order (the first that applies wins):

* ``torchrun``: ``RANK``, ``WORLD_SIZE`` or ``LOCAL_RANK`` set (also ``srun torchrun ...``, one
  torchrun per node: torchrun's variables describe the worker, SLURM's the node), unless they are
  the ones :func:`export_env` wrote for srun / submitit-local (detection is stable after the export).
* ``submitit-local``: ``SUBMITIT_EXECUTOR=local`` (submitit's local executor sets only its own
  ``SUBMITIT_LOCAL_GLOBALID/LOCALID/NTASKS/JOB_ID``, no ``SLURM_*``); one node, master 127.0.0.1.
* ``srun``: ``SLURM_PROCID`` set (with ``SLURM_NTASKS``, ``SLURM_LOCALID``, and ``SLURM_STEP_NODELIST``
  or ``SLURM_JOB_NODELIST``): one process per task, as submitit and PySlowFast's SLURM scripts run it.
  The master is the first host of the step's node list (SLURM puts task 0 there), parsed here
  without ``scontrol``; the port is ``10000 + SLURM_JOB_ID % 20000``, the same in every task.
* ``single``: none of these; rank 0 of 1.

``MASTER_ADDR`` and ``MASTER_PORT``, when set, always win (e.g. a cluster whose node names do not
resolve on the high-speed network: ``export MASTER_ADDR=$(hostname)-ib``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, MutableMapping, Optional

from videoattn.utils.errors import OneLineError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
LOCAL_VARS = ("SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_LOCALID")
PORT_BASE, PORT_SPAN = 10000, 20000


class LauncherError(OneLineError, ValueError):
    """Partial or inconsistent launcher variables; the message is one line naming them."""


@dataclass(frozen=True)
class LaunchInfo:
    launcher: str  # torchrun | srun | submitit-local | single
    rank: int
    world_size: int
    local_rank: int
    master_addr: str  # "" for a single process
    master_port: int  # 0 for a single process

    def describe(self) -> str:
        """One log line, e.g. ``launcher srun: rank 5 of 8 (local rank 1), master gpu01:13105``."""
        where = f", master {self.master_addr}:{self.master_port}" if self.world_size > 1 else ""
        return f"launcher {self.launcher}: rank {self.rank} of {self.world_size} (local rank {self.local_rank}){where}"


def parse_nodelist(nodelist: str) -> List[str]:
    """Expand SLURM's compressed host list, in SLURM's order, keeping zero padding.

    ``gpu[01-03,07]`` -> gpu01 gpu02 gpu03 gpu07; ``gpu[1-2],cpu3`` -> gpu1 gpu2 cpu3;
    ``n[1-2]-ib`` -> n1-ib n2-ib; ``r[1-2]n[1-2]`` -> r1n1 r1n2 r2n1 r2n2.
    Raises ``LauncherError`` on anything else (unbalanced brackets, empty names, a descending range).
    """
    text = nodelist.strip()
    hosts: List[str] = []
    for entry in _split_top_level(text):
        if not entry:
            raise LauncherError(f"cannot parse the SLURM node list '{nodelist}': empty host name")
        hosts.extend(_expand_entry(entry, nodelist))
    if not hosts:
        raise LauncherError(f"cannot parse the SLURM node list '{nodelist}': no host")
    return hosts


def _split_top_level(text: str) -> List[str]:
    """Split at the commas that are outside brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += (c == "[") - (c == "]")
        if depth < 0 or depth > 1:
            raise LauncherError(f"cannot parse the SLURM node list '{text}': unbalanced or nested brackets")
        if c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise LauncherError(f"cannot parse the SLURM node list '{text}': unbalanced brackets")
    parts.append(text[start:])
    return parts


def _expand_entry(entry: str, nodelist: str) -> List[str]:
    """``prefix[ranges]suffix[ranges]...`` -> every combination, left to right."""
    names = [""]
    for m in re.finditer(r"([^\[\]]*)(?:\[([^\[\]]*)\])?", entry):
        names = [n + m.group(1) for n in names]
        if m.group(2) is not None:
            names = [n + s for n in names for s in _expand_ranges(m.group(2), nodelist)]
    return names


def _expand_ranges(ranges: str, nodelist: str) -> List[str]:
    """``01-03,7`` -> 01 02 03 7; the width of the lower bound is kept (SLURM's zero padding)."""
    out = []
    for part in ranges.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise LauncherError(f"cannot parse the SLURM node list '{nodelist}': bad range '{part}'")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise LauncherError(f"cannot parse the SLURM node list '{nodelist}': descending range '{part}'")
        out.extend(f"{k:0{len(lo)}d}" for k in range(int(lo), int(hi) + 1))
    return out


def port_from_job_id(job_id: str, name: str = "SLURM_JOB_ID") -> int:
    """``10000 + job_id % 20000``: every task of a job derives the same port, concurrent jobs
    on a shared node (nearly always) different ones."""
    return PORT_BASE + _int(job_id, name, minimum=0) % PORT_SPAN


def _int(value: Optional[str], name: str, minimum: int = 0) -> int:
    try:
        v = int(str(value).strip())
    except ValueError:
        raise LauncherError(f"{name}='{value}' is not an integer") from None
    if v < minimum:
        raise LauncherError(f"{name}={v} must be >= {minimum}")
    return v


def _require(env: Mapping[str, str], names, launcher: str, trigger: str) -> None:
    missing = [n for n in names if not env.get(n, "").strip()]
    if missing:
        present = [n for n in names if n not in missing]
        raise LauncherError(
            f"incomplete {launcher} environment: {', '.join(present) or trigger} set but {', '.join(missing)} missing"
        )


def _check_ranks(rank: int, world: int, local: int, names) -> None:
    r, w, lr = names
    if rank >= world:
        raise LauncherError(f"inconsistent launcher variables: {r}={rank} must be < {w}={world}")
    if local > rank:
        raise LauncherError(f"inconsistent launcher variables: {lr}={local} must be <= {r}={rank}")


def _master(
    env: Mapping[str, str], default_addr: Optional[str], default_port: Optional[int], what_addr: str, what_port: str
) -> tuple:
    """MASTER_ADDR / MASTER_PORT from the environment when set, else the launcher's defaults."""
    addr = env.get("MASTER_ADDR", "").strip() or default_addr
    if not addr:
        raise LauncherError(f"no master address: set MASTER_ADDR or {what_addr}")
    if env.get("MASTER_PORT", "").strip():
        port = _int(env["MASTER_PORT"], "MASTER_PORT", minimum=1)
    elif default_port is None:
        raise LauncherError(f"no master port: set MASTER_PORT or {what_port}")
    else:
        port = default_port
    if port > 65535:
        raise LauncherError(f"MASTER_PORT={port} must be <= 65535")
    return addr, port


def _torchrun(env: Mapping[str, str]) -> LaunchInfo:
    _require(env, TORCHRUN_VARS, "torchrun", "")
    rank, world = _int(env["RANK"], "RANK"), _int(env["WORLD_SIZE"], "WORLD_SIZE", minimum=1)
    local = _int(env["LOCAL_RANK"], "LOCAL_RANK")
    _check_ranks(rank, world, local, TORCHRUN_VARS)
    if world == 1:  # torchrun --nproc_per_node=1: no rendezvous needed
        port = _int(env["MASTER_PORT"], "MASTER_PORT") if env.get("MASTER_PORT", "").strip() else 0
        return LaunchInfo("torchrun", rank, world, local, env.get("MASTER_ADDR", "").strip(), port)
    _require(env, ("MASTER_ADDR", "MASTER_PORT"), "torchrun", "RANK, WORLD_SIZE, LOCAL_RANK")
    addr, port = _master(env, None, None, "", "")
    return LaunchInfo("torchrun", rank, world, local, addr, port)


def _srun(env: Mapping[str, str], check_gpus: bool) -> LaunchInfo:
    _require(env, SLURM_VARS, "srun", "SLURM_PROCID")
    rank, world = _int(env["SLURM_PROCID"], "SLURM_PROCID"), _int(env["SLURM_NTASKS"], "SLURM_NTASKS", minimum=1)
    local = _int(env["SLURM_LOCALID"], "SLURM_LOCALID")
    _check_ranks(rank, world, local, SLURM_VARS)
    for limit in ("SLURM_NTASKS_PER_NODE",) + (("SLURM_GPUS_ON_NODE",) if check_gpus else ()):
        value = env.get(limit, "").strip()
        if value.isdigit():  # known (other forms, e.g. heterogeneous jobs, are not checked)
            n = int(value)
            if local >= n:
                hint = " (one task per GPU: --ntasks-per-node must equal the GPUs per node)" if "GPU" in limit else ""
                raise LauncherError(f"inconsistent SLURM variables: SLURM_LOCALID={local} must be < {limit}={n}{hint}")
    nodes = (
        env.get("SLURM_STEP_NODELIST", "").strip()
        or env.get("SLURM_JOB_NODELIST", "").strip()
        or env.get("SLURM_NODELIST", "").strip()
    )
    first = parse_nodelist(nodes)[0] if nodes and not env.get("MASTER_ADDR", "").strip() else None
    job_id = env.get("SLURM_JOB_ID", "").strip() or env.get("SLURM_JOBID", "").strip()
    port = port_from_job_id(job_id) if job_id and not env.get("MASTER_PORT", "").strip() else None
    if world == 1:
        return LaunchInfo("srun", rank, world, local, first or env.get("MASTER_ADDR", ""), port or 0)
    addr, port = _master(env, first, port, "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
    return LaunchInfo("srun", rank, world, local, addr, port)


def _submitit_local(env: Mapping[str, str]) -> LaunchInfo:
    _require(env, LOCAL_VARS, "submitit local", "SUBMITIT_EXECUTOR=local")
    rank = _int(env["SUBMITIT_LOCAL_GLOBALID"], "SUBMITIT_LOCAL_GLOBALID")
    world = _int(env["SUBMITIT_LOCAL_NTASKS"], "SUBMITIT_LOCAL_NTASKS", minimum=1)
    local = _int(env["SUBMITIT_LOCAL_LOCALID"], "SUBMITIT_LOCAL_LOCALID")
    _check_ranks(rank, world, local, LOCAL_VARS)
    job_id = env.get("SUBMITIT_LOCAL_JOB_ID", "").strip()
    addr, port = _master(
        env,
        "127.0.0.1",
        port_from_job_id(job_id, "SUBMITIT_LOCAL_JOB_ID") if job_id else None,
        "",
        "SUBMITIT_LOCAL_JOB_ID",
    )
    return LaunchInfo("submitit-local", rank, world, local, addr, port)


def detect_launcher(env: Optional[Mapping[str, str]] = None, check_gpus: bool = True) -> LaunchInfo:
    """The launcher and this process's place in the job, from ``env`` (default ``os.environ``).

    ``check_gpus``: under srun, also require ``SLURM_LOCALID < SLURM_GPUS_ON_NODE`` when SLURM
    reports GPUs (pass False for a CPU/gloo run on GPU nodes). Raises :class:`LauncherError`.
    """
    env = os.environ if env is None else env
    if any(env.get(n, "").strip() for n in TORCHRUN_VARS):
        return _exported(env, check_gpus) or _torchrun(env)
    return _slurm_or_local(env, check_gpus) or LaunchInfo("single", 0, 1, 0, "", 0)


def _slurm_or_local(env: Mapping[str, str], check_gpus: bool) -> Optional[LaunchInfo]:
    if env.get("SUBMITIT_EXECUTOR", "") == "local":
        return _submitit_local(env)
    if any(env.get(n, "").strip() for n in SLURM_VARS):
        return _srun(env, check_gpus)
    return None


def _exported(env: Mapping[str, str], check_gpus: bool) -> Optional[LaunchInfo]:
    """The srun / submitit-local launch whose ``env://`` variables :func:`export_env` already wrote
    into ``env`` (they equal what that launcher gives), so that detecting again after the export
    names the same launcher. None under torchrun (it sets ``TORCHELASTIC_RUN_ID``; also
    ``srun torchrun``) or when the variables differ."""
    if env.get("TORCHELASTIC_RUN_ID", "").strip():
        return None
    try:
        own = _slurm_or_local(env, check_gpus)
    except LauncherError:
        return None
    if own is None or any(env.get(k) != v for k, v in env_for(own).items()):
        return None
    return own


def env_for(info: LaunchInfo) -> Dict[str, str]:
    """The ``env://`` variables for ``info`` (nothing for a single process)."""
    if info.launcher == "single":
        return {}
    out = {"RANK": str(info.rank), "WORLD_SIZE": str(info.world_size), "LOCAL_RANK": str(info.local_rank)}
    if info.master_addr:
        out["MASTER_ADDR"] = info.master_addr
    if info.master_port:
        out["MASTER_PORT"] = str(info.master_port)
    return out


def export_env(info: LaunchInfo, environ: Optional[MutableMapping[str, str]] = None) -> Dict[str, str]:
    """Write :func:`env_for` into ``environ`` (default ``os.environ``) so that
    ``init_process_group(init_method="env://")`` and code reading ``RANK``/``WORLD_SIZE`` work the
    same under every launcher. Returns what was written."""
    environ = os.environ if environ is None else environ
    values = env_for(info)
    environ.update(values)
    return values
