"""run_tasks: real spawned worker processes, a task that hangs, one that crashes, one that raises."""

import os
import time

import pytest
from worker_helpers import task

from videoattn.utils.workers import CRASHED, ERROR, OK, TIME_LIMIT, run_tasks


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_hang_crash_and_error_cost_only_their_own_task():
    tasks = [1, "hang", 2, "segfault", 3, "raise", 4, 5]
    results = {i: (status, value) for i, status, value in run_tasks(task, tasks, workers=2, time_limit=8)}
    assert sorted(results) == list(range(len(tasks)))
    assert {i: v for i, (s, v) in results.items() if s == OK} == {0: 1, 2: 4, 4: 9, 6: 16, 7: 25}
    assert results[1][0] == TIME_LIMIT
    assert results[3][0] == CRASHED and "-11" in results[3][1]
    assert results[5] == (ERROR, "ValueError: bad task")


def test_closing_early_kills_the_workers():
    results = run_tasks(task, ["pid", "hang"], workers=2, time_limit=None)
    i, status, pid = next(results)
    assert (i, status) == (0, OK) and _alive(pid)
    results.close()
    time.sleep(0.5)
    assert not _alive(pid)
    assert os.getpid() != pid
