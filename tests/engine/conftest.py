"""Fixtures shared by the engine tests.

``eval_kit`` (session): a small evaluation set built from ``synthetic_root``: 5 real videos, one
corrupt file and one annotation row whose file is missing (``evalkit.make_eval_root``), a small
config (``evalkit.write_config``) and a checkpoint with random, non-degenerate weights written by
the real checkpoint code. Read-only: write outputs under ``setup["tmp"]``.

``setup`` (module): ``eval_kit`` plus a fresh folder ``tmp`` for the module's outputs.
"""

import pytest
from evalkit import make_eval_root, make_random_checkpoint, write_config

from videoattn.config import load_config


@pytest.fixture(scope="session")
def eval_kit(synthetic_root, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("eval_kit")
    data = make_eval_root(synthetic_root, str(tmp / "data"), num_good=5)
    cfg_path = write_config(str(tmp / "cfg.yaml"), data)
    ckpt = make_random_checkpoint(load_config(cfg_path), str(tmp / "ckpt.pyth"))
    return {"data": data, "cfg": cfg_path, "ckpt": ckpt}


@pytest.fixture(scope="module")
def setup(eval_kit, tmp_path_factory, request) -> dict:
    return dict(eval_kit, tmp=tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
