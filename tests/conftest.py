"""Shared fixtures, and what lets the suite run on several pytest-xdist workers.

``synthetic_root``: a tiny synthetic Kinetics-style dataset (8 classes, 3 train + 2 val videos per
class, ~64x48..80x64 px, 1-1.6 s, H.264/VP9/MPEG-4) generated once per test run under a tmp dir
(:func:`built_once`: one copy shared by all xdist workers); layout as
``videoattn.datasets.synthetic.make_synthetic_dataset`` (train/, val/, train.csv, val.csv, train.txt,
val.txt, classes.txt). Treat it as read-only; copy it to modify it.

Under xdist (``make test`` runs ``-n 2 --dist loadfile``: a file's tests stay on one worker, so
module fixtures are built once) each worker runs its in-process torch on one thread, and the files
that start tool processes are handed out first (in that order: xdist's own re-sorting by test count
is turned off), so that no long file is left for the end.
"""

import fcntl
import os
import shutil

import pytest


def _xdist_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def built_once(tmp_path_factory, name: str, build) -> str:
    """The folder ``name`` under the run's base temp dir, filled by ``build(path)`` once per test
    run: under xdist the first worker builds it while holding a file lock, the others wait for it
    and reuse it (a session fixture alone would build one copy per worker)."""
    base = tmp_path_factory.getbasetemp()
    if _xdist_worker():
        base = base.parent  # the controller's base temp dir; each worker's own is base/popen-gwN
    path, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # a build that died half-way
            path.mkdir()
            build(str(path))
            done.touch()
    return str(path)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    from videoattn.datasets.synthetic import make_synthetic_dataset

    return built_once(
        tmp_path_factory,
        "synthetic",
        lambda root: make_synthetic_dataset(
            root,
            num_classes=8,
            train_per_class=3,
            val_per_class=2,
            seed=0,
            min_seconds=1.0,
            max_seconds=1.6,
            size_scale=0.5,
        ),
    )


def pytest_configure(config):
    # pytorchvideo's import calls torch.jit.script, which warns; the library imports it under a filter
    # (videoattn/models/pretrained.py), test modules that import it directly get this one instead
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script` is deprecated:FutureWarning")
    # The controller hands out files in the workers' collection order (pytest_collection_modifyitems:
    # slow files first). xdist >= 3.6 would re-sort them by test count (--loadscope-reorder, on by
    # default), which puts long files of few tests (test_preemption_resume: 2 tests, ~1 min) last,
    # with the other worker idle while one finishes them.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    if _xdist_worker():  # 2 workers x torch's default thread pool would oversubscribe the cores
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """Under xdist: the files with slow tests (tool processes, training) first, each file's tests in
    their order, so that the workers do not end on one long file while the other idles."""
    if not _xdist_worker():
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: keeps the order within a file
