"""videoattn.utils.launcher: SLURM node lists, launcher detection from env dicts, and a real
2-process gloo job started with SLURM_* variables only (no torchrun)."""

import json
import os

import pytest
from slurmkit import finish, free_port_job_id, start_tasks

from videoattn.utils.launcher import (
    LauncherError,
    LaunchInfo,
    detect_launcher,
    env_for,
    export_env,
    parse_nodelist,
    port_from_job_id,
)
from videoattn.utils.rendezvous import REPORT_ENV, report_interval

HERE = os.path.dirname(os.path.abspath(__file__))

# Forms SLURM writes in SLURM_JOB_NODELIST / SLURM_STEP_NODELIST, and their expansion (by hand).
NODELISTS = [
    ("gpu01", ["gpu01"]),
    ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
    ("gpu[1-2],cpu[3-4]", ["gpu1", "gpu2", "cpu3", "cpu4"]),
    ("a-b[001-003]", ["a-b001", "a-b002", "a-b003"]),
    ("n[1-3]-ib", ["n1-ib", "n2-ib", "n3-ib"]),
    ("learnfair[0218,0293-0294],devfair0101", ["learnfair0218", "learnfair0293", "learnfair0294", "devfair0101"]),
    ("node[8-11]", ["node8", "node9", "node10", "node11"]),
    ("node[098-101]", ["node098", "node099", "node100", "node101"]),
    ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
    ("gpu07,gpu03", ["gpu07", "gpu03"]),  # SLURM's order is kept: the first host is the master
    (" gpu01\n", ["gpu01"]),
]


@pytest.mark.parametrize("text,hosts", NODELISTS)
def test_parse_nodelist(text, hosts):
    assert parse_nodelist(text) == hosts


@pytest.mark.parametrize("text", [t for t, _ in NODELISTS if "[" in t and "r[1-2]n" not in t])
def test_parse_nodelist_agrees_with_submitit(text):
    from submitit.slurm.slurm import _parse_node_list  # an independent implementation

    assert parse_nodelist(text) == _parse_node_list(text)


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "empty host"),
        ("gpu[01-03", "unbalanced"),
        ("gpu01]", "unbalanced"),
        ("gpu[]", "bad range"),
        ("gpu[a-c]", "bad range"),
        ("gpu[3-1]", "descending"),
        ("gpu01,,gpu02", "empty host"),
        ("g[1[2]]", "nested"),
    ],
)
def test_parse_nodelist_rejects(text, why):
    with pytest.raises(LauncherError, match=why) as e:
        parse_nodelist(text)
    assert "\n" not in str(e.value)


def slurm_env(procid=3, ntasks=8, localid=1, **extra):
    env = {
        "SLURM_PROCID": str(procid),
        "SLURM_NTASKS": str(ntasks),
        "SLURM_LOCALID": str(localid),
        "SLURM_JOB_ID": "4242421",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SUBMITIT_EXECUTOR": "slurm",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def test_srun_rank_master_and_port():
    info = detect_launcher(slurm_env())
    assert info == LaunchInfo("srun", 3, 8, 1, "gpu07", 10000 + 4242421 % 20000)
    assert env_for(info) == {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(10000 + 4242421 % 20000),
    }
    assert "launcher srun: rank 3 of 8 (local rank 1), master gpu07:" in info.describe()


def test_srun_prefers_the_step_nodelist_and_respects_master_variables():
    info = detect_launcher(slurm_env(SLURM_STEP_NODELIST="gpu[08]"))
    assert info.master_addr == "gpu08"
    info = detect_launcher(slurm_env(MASTER_ADDR="gpu07-ib", MASTER_PORT="29511", SLURM_JOB_NODELIST="bad[["))
    assert (info.master_addr, info.master_port) == ("gpu07-ib", 29511)  # the node list is not needed then
    assert detect_launcher(slurm_env(SLURM_JOB_NODELIST=None, SLURM_NODELIST="x[1-2]")).master_addr == "x1"


def test_port_from_job_id_is_shared_and_in_range():
    assert port_from_job_id("4242421") == port_from_job_id("4242421") == 10000 + 4242421 % 20000
    assert {port_from_job_id(str(j)) for j in (0, 19999, 20000, 10**9 + 7)} <= set(range(10000, 30000))
    assert port_from_job_id("19999") != port_from_job_id("20001")


def test_torchrun_wins_over_slurm():
    """``srun torchrun ...``: torchrun's variables describe the worker, SLURM's the node."""
    env = slurm_env(
        procid=1,
        ntasks=2,
        localid=0,
        RANK="9",
        WORLD_SIZE="16",
        LOCAL_RANK="1",
        MASTER_ADDR="gpu07",
        MASTER_PORT="29500",
    )
    assert detect_launcher(env) == LaunchInfo("torchrun", 9, 16, 1, "gpu07", 29500)


def test_detection_names_the_same_launcher_after_the_export():
    """init_distributed exports RANK/WORLD_SIZE/LOCAL_RANK (env://); detecting again, e.g. in a
    second tool call of the same process, must still say srun, not torchrun."""
    for env in (
        slurm_env(procid=1, ntasks=2, localid=1),
        {
            "SUBMITIT_EXECUTOR": "local",
            "SUBMITIT_LOCAL_GLOBALID": "1",
            "SUBMITIT_LOCAL_LOCALID": "1",
            "SUBMITIT_LOCAL_NTASKS": "2",
            "SUBMITIT_LOCAL_JOB_ID": "31337",
        },
    ):
        first = detect_launcher(env)
        export_env(first, env)
        assert detect_launcher(env) == first and first.launcher in ("srun", "submitit-local")
    env["WORLD_SIZE"] = "4"  # variables that differ from the launcher's own: a torchrun inside the job
    assert detect_launcher(env).launcher == "torchrun"
    env = slurm_env(procid=1, ntasks=2, localid=1)
    export_env(detect_launcher(env), env)
    env["TORCHELASTIC_RUN_ID"] = "none"  # srun torchrun --nnodes=2 --nproc_per_node=1: torchrun's own
    assert detect_launcher(env).launcher == "torchrun"


def test_submitit_local_executor_variables():
    """What submitit's LocalExecutor sets (no SLURM_*): SUBMITIT_EXECUTOR=local and SUBMITIT_LOCAL_*."""
    env = {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_ID": "31337",
        "SUBMITIT_LOCAL_NODEID": "0",
    }
    assert detect_launcher(env) == LaunchInfo("submitit-local", 1, 2, 1, "127.0.0.1", 10000 + 31337 % 20000)


def test_single_process_exports_nothing():
    info = detect_launcher({"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "gpu01", "PATH": "/bin"})  # salloc shell
    assert info == LaunchInfo("single", 0, 1, 0, "", 0)
    env = {"PATH": "/bin"}
    assert export_env(info, env) == {} and env == {"PATH": "/bin"}


def test_export_env_writes_what_env_init_needs():
    env = {"PATH": "/bin"}
    export_env(detect_launcher(slurm_env(procid=0, ntasks=2, localid=0)), env)
    assert env == {
        "PATH": "/bin",
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(10000 + 4242421 % 20000),
    }


@pytest.mark.parametrize(
    "env,names",
    [
        (slurm_env(SLURM_NTASKS=None), ["SLURM_PROCID", "SLURM_NTASKS"]),
        (slurm_env(SLURM_PROCID=None, SLURM_NTASKS=None), ["SLURM_LOCALID", "SLURM_PROCID", "SLURM_NTASKS"]),
        (slurm_env(procid=8, ntasks=8), ["SLURM_PROCID=8", "SLURM_NTASKS=8"]),
        (slurm_env(procid=2, localid=3), ["SLURM_LOCALID=3", "SLURM_PROCID=2"]),
        (slurm_env(procid=5, localid=4, SLURM_NTASKS_PER_NODE="4"), ["SLURM_LOCALID=4", "SLURM_NTASKS_PER_NODE=4"]),
        (slurm_env(localid=2, SLURM_GPUS_ON_NODE="2"), ["SLURM_LOCALID=2", "SLURM_GPUS_ON_NODE=2"]),
        (slurm_env(ntasks="eight"), ["SLURM_NTASKS", "eight"]),
        (slurm_env(procid=-1), ["SLURM_PROCID=-1"]),
        (slurm_env(SLURM_JOB_NODELIST=None), ["MASTER_ADDR", "SLURM_JOB_NODELIST"]),
        (slurm_env(SLURM_JOB_ID=None), ["MASTER_PORT", "SLURM_JOB_ID"]),
        (slurm_env(MASTER_PORT="70000"), ["MASTER_PORT=70000"]),
        ({"RANK": "0"}, ["RANK", "WORLD_SIZE", "LOCAL_RANK"]),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, ["MASTER_ADDR", "MASTER_PORT"]),
        ({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_GLOBALID": "0"}, ["SUBMITIT_LOCAL_NTASKS"]),
    ],
)
def test_partial_or_inconsistent_variables_are_a_one_line_error_naming_them(env, names):
    with pytest.raises(LauncherError) as e:
        detect_launcher(env)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in names), msg


def test_gpu_check_can_be_turned_off_for_cpu_runs():
    env = slurm_env(localid=2, SLURM_GPUS_ON_NODE="2")
    assert detect_launcher(env, check_gpus=False).local_rank == 2
    # forms other than a plain count are not second-guessed
    assert detect_launcher(slurm_env(localid=2, SLURM_NTASKS_PER_NODE="2(x3)")).local_rank == 2


def start_srun_tasks(mode, out, ntasks=2, extra_args=(), **extra):
    """``ntasks`` slurm_worker.py processes with the variables srun gives its tasks on one node (no torchrun)."""
    job_id = free_port_job_id()
    args = [os.path.join(HERE, "slurm_worker.py"), mode, str(out), *extra_args]
    return start_tasks(args, ntasks, job_id, **extra), job_id


@pytest.mark.slow
def test_two_srun_tasks_initialise_gloo_and_all_reduce(tmp_path):
    procs, job_id = start_srun_tasks("allreduce", tmp_path)
    for rc, o, e in finish(procs):
        assert rc == 0, o + e
    reports = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    port = 10000 + int(job_id) % 20000
    for r, rep in enumerate(reports):
        assert rep["launcher"] == "srun"
        assert (rep["rank"], rep["world_size"], rep["local_rank"]) == (r, 2, r)
        assert (rep["dist_rank"], rep["dist_world_size"]) == (r, 2)  # what torch.distributed made of it
        assert rep["env"] == {
            "MASTER_ADDR": "localhost",
            "MASTER_PORT": str(port),
            "RANK": str(r),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(r),
        }
        assert rep["sum"] == [3.0, 30.0]  # (1 + 2) and (10 + 20) over the two ranks


@pytest.mark.slow
def test_inconsistent_srun_variables_stop_the_worker_with_one_line(tmp_path):
    procs, _ = start_srun_tasks("allreduce", tmp_path, ntasks=1, SLURM_NTASKS="")  # SLURM_NTASKS empty
    ((rc, out, err),) = finish(procs)
    assert rc == 1 and not os.path.exists(tmp_path / "rank0.json")
    assert err.strip().splitlines() == [
        "launcher error: incomplete srun environment: SLURM_PROCID, SLURM_LOCALID set but SLURM_NTASKS missing"
    ]


def test_wait_report_interval_is_read_from_one_variable_and_checked(monkeypatch):
    """How often rank 0 says whom it waits for (tests/engine/test_srun_tools.py sets 1 s)."""
    monkeypatch.delenv(REPORT_ENV, raising=False)
    assert report_interval() == 60.0
    monkeypatch.setenv(REPORT_ENV, "2.5")
    assert report_interval() == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(REPORT_ENV, bad)
        with pytest.raises(LauncherError, match=f"{REPORT_ENV}='{bad}' must be a positive number of seconds"):
            report_interval()
