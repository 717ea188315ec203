"""Shared fixtures.

``synthetic_root``: a tiny synthetic Kinetics-style dataset (8 classes, 3 train + 2 val videos per
class, ~64x48..80x64 px, 1-1.6 s, H.264/VP9/MPEG-4) generated once per test session under a tmp
dir; layout as ``videoattn.datasets.synthetic.make_synthetic_dataset`` (train/, val/, train.csv,
val.csv, train.txt, val.txt, classes.txt). Treat it as read-only; copy it to modify it.
"""
import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    from videoattn.datasets.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(str(root), num_classes=8, train_per_class=3, val_per_class=2, seed=0,
                           min_seconds=1.0, max_seconds=1.6, size_scale=0.5)
    return str(root)
