"""tools/test_net.py and tools/extract_features.py started as 2 srun tasks (SLURM_* variables, no
torchrun): the launcher is detected and logged, the process group forms from the node list and the
job id, and the results equal a single process's. (Training under srun: test_preemption_resume.py.)"""
import json
import os

import numpy as np
import pytest

from evalkit import check, run
from slurmkit import srun

pytestmark = pytest.mark.slow


def _both(args):
    """(one process's CompletedProcess, [(status, stdout, stderr)] of 2 srun tasks) of ``args`` + output."""
    return check(run(args(1))), srun(args(2), ntasks=2)


def _ok(tasks):
    assert [rc for rc, _, _ in tasks] == [0, 0], "\n".join(e[-3000:] for _, _, e in tasks)
    assert "launcher srun: rank 0 of 2 (local rank 0), master localhost:" in tasks[0][1]


def test_test_net_as_srun_tasks_equals_one_process(setup):
    out = {n: str(setup["tmp"] / f"test{n}") for n in (1, 2)}
    one, two = _both(lambda n: ["tools/test_net.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"],
                                f"output_dir={out[n]}"])
    _ok(two)
    m1, m2 = (json.load(open(os.path.join(out[n], "test", "metrics.json"))) for n in (1, 2))
    assert m1.pop("world_size") == 1 and m2.pop("world_size") == 2
    assert m1 == m2 and m1["num_videos"] == 5
    assert "launcher single: rank 0 of 1" in one.stdout


def test_extract_features_as_srun_tasks_equals_one_process(setup):
    out = {n: str(setup["tmp"] / f"features{n}") for n in (1, 2)}
    _, two = _both(lambda n: ["tools/extract_features.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"],
                              "--input", os.path.join(setup["data"]["root"], "val.csv"), "--output", out[n]])
    _ok(two)
    names = sorted(n for n in os.listdir(out[1]) if not n.startswith("."))
    assert names == sorted(n for n in os.listdir(out[2]) if not n.startswith("."))
    npy = [n for n in names if n.endswith(".npy")]
    assert len(npy) == 5
    for n in npy:
        np.testing.assert_allclose(np.load(os.path.join(out[1], n)), np.load(os.path.join(out[2], n)), atol=1e-5)
    assert open(os.path.join(out[1], "index.csv")).read() == open(os.path.join(out[2], "index.csv")).read()
