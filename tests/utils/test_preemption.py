"""videoattn.utils.preemption: flag-only handlers with real signals, restore of the previous
handlers, and a real 2-process gloo job (started with SLURM_* variables) in which one rank gets a
real signal and both ranks stop at the same iteration."""

import json
import os
import signal
import threading
import time

import pytest
from slurmkit import finish
from test_launcher import start_srun_tasks

from videoattn.utils.preemption import REQUEUE_EXIT_CODE, TERMINATED_EXIT_CODE, PreemptionHandler


@pytest.fixture
def sentinel_handlers():
    """Python handlers standing for whatever was there before (submitit's); restored afterwards."""
    calls = []
    old = {
        s: signal.signal(s, lambda signum, frame: calls.append(signum))
        for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
    }
    yield calls, {s: signal.getsignal(s) for s in old}
    for s, h in old.items():
        signal.signal(s, h)


def deliver(sig):
    """A real signal to this process; CPython runs the Python handler before the next bytecode."""
    os.kill(os.getpid(), sig)


def test_usr1_sets_the_flag_only_and_asks_for_a_requeue(sentinel_handlers):
    calls, before = sentinel_handlers
    with PreemptionHandler() as pre:
        assert not pre.should_stop() and pre.exit_code == 0
        deliver(signal.SIGUSR1)
        deliver(signal.SIGUSR1)  # a second one is harmless
        assert pre.received == signal.SIGUSR1 and pre.requested
        assert calls == []  # the previous handler is not called while ours is installed
        assert pre.should_stop() and pre.exit_code == REQUEUE_EXIT_CODE == 75
    assert {s: signal.getsignal(s) for s in before} == before  # restored
    deliver(signal.SIGUSR1)
    assert calls == [signal.SIGUSR1]  # and working again


def test_sigterm_stops_without_requeue_but_a_requeue_signal_wins(sentinel_handlers):
    with PreemptionHandler() as pre:
        deliver(signal.SIGTERM)
        assert pre.should_stop() and pre.exit_code == TERMINATED_EXIT_CODE == 143
        deliver(signal.SIGUSR1)
        assert pre.should_stop() and pre.exit_code == REQUEUE_EXIT_CODE
        assert pre.received == signal.SIGTERM  # the first one


def test_only_the_chosen_signals_are_taken(sentinel_handlers):
    calls, _ = sentinel_handlers
    with PreemptionHandler(signals=(signal.SIGUSR2,)) as pre:
        deliver(signal.SIGUSR1)  # not ours: the previous handler gets it
        assert calls == [signal.SIGUSR1] and not pre.should_stop()
        deliver(signal.SIGUSR2)
        assert pre.should_stop() and pre.exit_code == REQUEUE_EXIT_CODE


def test_default_handlers_come_back_as_default():
    before = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with PreemptionHandler():
            assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_install_outside_the_main_thread_is_refused():
    errors = []

    def run():
        try:
            PreemptionHandler().install()
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert len(errors) == 1 and "main thread" in errors[0]


@pytest.mark.slow
def test_ignore_signals_in_a_child(tmp_path):
    """What a DataLoader worker does in worker_init_fn: it survives the step-wide signal."""
    import subprocess
    import sys

    code = (
        "import os, signal, sys; from videoattn.utils.preemption import ignore_signals; ignore_signals(); "
        "os.kill(os.getpid(), signal.SIGUSR1); os.kill(os.getpid(), signal.SIGTERM); print('alive')"
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": repo}
    )
    assert p.returncode == 0 and p.stdout.strip() == "alive", p.stderr
    p = subprocess.run(
        [sys.executable, "-c", code.replace("ignore_signals(); ", "")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": repo},
    )
    assert p.returncode == -signal.SIGUSR1  # without it the default action kills the process


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig,target,code", [(signal.SIGUSR1, 1, REQUEUE_EXIT_CODE), (signal.SIGTERM, 0, TERMINATED_EXIT_CODE)]
)
def test_two_ranks_stop_at_the_same_iteration_when_one_gets_a_real_signal(tmp_path, sig, target, code):
    procs, _ = start_srun_tasks("preempt", tmp_path, extra_args=[5000])
    progress = tmp_path / f"progress{target}.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait (bounded) until the target rank is past iteration 3
        if any(p.poll() is not None for p in procs):
            break
        try:
            state = json.loads(progress.read_text())
        except (FileNotFoundError, ValueError):
            state = {"iteration": -1}
        if state["iteration"] >= 3:
            os.kill(state["pid"], sig)
            break
        time.sleep(0.05)
    results = finish(procs)
    assert [rc for rc, _, _ in results] == [code, code], results
    reports = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert reports[0]["stop_at"] == reports[1]["stop_at"] is not None  # the same iteration on both ranks
    assert reports[0]["work"] == reports[1]["work"] == 2 * (reports[0]["stop_at"] + 1)
    got, other = reports[target], reports[1 - target]
    assert got["received"] == sig and other["received"] is None  # only one rank got the signal
    assert 3 <= got["stop_at"] <= got["first_seen"]  # stopped at the first boundary after seeing it
    assert got["exit_code"] == other["exit_code"] == code
    assert got["usr1_after"] == other["usr1_after"] == str(signal.SIG_DFL)  # handlers restored
    assert got["term_after"] == str(signal.SIG_DFL)
