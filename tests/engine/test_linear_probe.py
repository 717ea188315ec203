"""Linear probes (issue 23): the fit against an independent optimiser, the folded head against the
probe, bad inputs in one line, and the written checkpoint through a real test_net process giving
the probe's own predictions on real extracted features."""

import contextlib
import csv
import importlib.util
import io
import json
import logging
import os

import numpy as np
import pytest
import torch
from evalkit import REPO, check, make_random_checkpoint, run, write_config

from videoattn.apps.probe import ProbeOptions, run_probe, select_l2
from videoattn.apps.probe_data import ProbeSplit
from videoattn.apps.probe_fit import Standardiser, fit_logistic, kfold_assignment, objective, wilson_interval
from videoattn.apps.probe_head import fold_head
from videoattn.config import load_config
from videoattn.utils.errors import UsageError

CLASSES = 4  # the probe's classes: fewer than the backbone's 8


def _blobs(n_per_class=20, dim=6, classes=3, seed=0):
    """Overlapping Gaussian classes (not separable, so the optimum is finite at any L2 weight)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (classes, dim))
    x = np.concatenate([c + rng.normal(0, 1.5, (n_per_class, dim)) for c in centres])
    return x * rng.uniform(0.1, 10, dim) + rng.normal(0, 5, dim), np.repeat(np.arange(classes), n_per_class)


def test_fit_equals_an_independent_optimiser_and_is_stationary():
    """scipy's L-BFGS-B on the same objective (scikit-learn is not in the venv; this is sklearn's
    LogisticRegression(C=1/(l2 n)) objective scaled by 1/(C n)) lands on the same probe."""
    optimize = pytest.importorskip("scipy.optimize")
    x, y = _blobs()
    z = Standardiser.fit(x)(x)
    l2, d, c = 0.01, z.shape[1], 3
    fit = fit_logistic(z, y, c, l2)
    zt, yt = torch.as_tensor(z), torch.as_tensor(y)

    def f(theta):
        t = torch.as_tensor(theta, dtype=torch.float64).requires_grad_(True)
        loss = objective(t[: c * d].view(c, d), t[c * d :], zt, yt, l2)
        loss.backward()
        return float(loss.detach()), t.grad.numpy().copy()

    ref = optimize.minimize(f, np.zeros(c * d + c), jac=True, method="L-BFGS-B", options=dict(gtol=1e-10, ftol=0))
    assert fit.converged and fit.grad_max < 1e-6  # the gradient at the probe's optimum is zero
    np.testing.assert_allclose(fit.weight.numpy().ravel(), ref.x[: c * d], atol=1e-5)
    np.testing.assert_allclose(fit.bias.numpy(), ref.x[c * d :], atol=1e-5)
    ref_pred = (z @ ref.x[: c * d].reshape(c, d).T + ref.x[c * d :]).argmax(1)
    assert (fit.logits(z).argmax(1).numpy() == ref_pred).all()
    assert 0.5 < (ref_pred == y).mean() < 1.0  # a probe that learnt something, on classes that overlap


def test_folded_head_on_raw_features_equals_the_probe():
    x, y = _blobs(classes=3)
    std = Standardiser.fit(x)
    fit = fit_logistic(std(x), y, 3, 0.01)
    head = fold_head(fit, std)
    raw = torch.as_tensor(x, dtype=torch.float32) @ head["head.proj.weight"].T + head["head.proj.bias"]
    # float32 head: relative error ~1e-7 per term, features up to ~60 in size
    np.testing.assert_allclose(raw.numpy(), fit.logits(std(x)).numpy(), rtol=1e-4, atol=1e-4)


def test_wilson_interval_known_values():
    # hand-computed from the closed form (z = 1.96): 8/10 -> [0.4902, 0.9433], 10/10 -> [0.7225, 1]
    assert wilson_interval(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)


def _split(name, x, y, windows=1):
    """A split whose videos have ``windows`` jittered copies of ``x``'s rows as window features."""
    rng = np.random.default_rng(1)
    wins = [row + rng.normal(0, 0.1, (windows, len(row))) for row in x]
    return ProbeSplit(name, [f"/v/{name}{i}.mp4" for i in range(len(y))], y, wins)


def test_kfold_selection_is_stratified_and_deterministic():
    x, y = _blobs(n_per_class=10)
    folds = kfold_assignment(y, 4, seed=0)
    assert all(sorted(np.bincount(folds[y == c], minlength=4)) == [2, 2, 3, 3] for c in range(3))
    train = _split("train", x, y, windows=3)
    o = ProbeOptions(features=[], train="t", output="o", folds=4, per="clip", l2_grid=[1e-3, 1e-1, 10])
    a, b = select_l2(train, None, o, 3, 0), select_l2(train, None, o, 3, 0)
    assert [vars(p) for p in a.points] == [vars(p) for p in b.points] and a.fits == 12
    assert a.picked.l2 < 10  # the heaviest weight flattens the logits: it never wins here


# ------------------------------------------------------------------ the tool on extract_features' output


def _write_features(folder, videos, layer="pool"):
    """An extract_features-style folder, as written before index.csv had a ``weights`` column:
    ``videos`` = {path: (W, D) array}."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "index.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "path", "num_windows", "layer", "features", "windows"])
        for k, (path, feats) in enumerate(videos.items()):
            np.save(os.path.join(folder, f"v{k}.npy"), feats.astype(np.float32))
            w.writerow([f"v{k}", path, len(feats), layer, f"v{k}.npy", f"v{k}.json"])


@pytest.fixture
def fake(tmp_path):
    """Annotations (PySlowFast lists) of 6 videos in 3 classes and their features, in ``tmp_path``."""
    x, y = _blobs(n_per_class=2)
    paths = []
    for i in range(len(y)):
        paths.append(str(tmp_path / f"v{i}.mp4"))
        open(paths[-1], "wb").close()
    (tmp_path / "train.txt").write_text("".join(f"v{i}.mp4 {c}\n" for i, c in enumerate(y)))
    _write_features(str(tmp_path / "feats"), {p: x[i : i + 1] for i, p in enumerate(paths)})
    cfg = load_config(None, [f"data.root={tmp_path}", "data.train_split=train.txt", "device=cpu"])
    opts = dict(features=[str(tmp_path / "feats")], train="train.txt", val="train.txt", output=str(tmp_path / "out"))
    return cfg, opts, paths, x


@pytest.mark.parametrize(
    "fault, expected",
    [
        ("missing", "rows have no features, first: "),
        ("classes", "class count mismatch: "),
        ("nan", "NaN or inf features"),
        ("layer", "features of layer 'res4' are not the head's input"),
        ("folds_and_val", "not both"),
    ],
)
def test_bad_input_gets_one_line(fake, tmp_path, fault, expected):
    cfg, opts, paths, x = fake
    feats = opts["features"][0]
    if fault == "missing":
        _write_features(feats, {p: x[i : i + 1] for i, p in enumerate(paths[:-1])})
    elif fault == "classes":
        (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")  # d: no training video
        cfg.data.classes_file = "classes.txt"
    elif fault == "nan":
        _write_features(feats, {p: x[i : i + 1] * (np.nan if i == 2 else 1) for i, p in enumerate(paths)})
    elif fault == "layer":
        _write_features(feats, {p: x[i : i + 1] for i, p in enumerate(paths)}, layer="res4")
        opts["checkpoint"] = str(tmp_path / "any.pyth")
    else:
        opts["folds"] = 2
    with pytest.raises(UsageError, match=expected) as e:
        run_probe(cfg, ProbeOptions(**opts))
    assert "\n" not in str(e.value) and not os.path.exists(opts["output"])
    if fault == "missing":  # with --allow-missing the row is left out, and said so
        info = run_probe(cfg, ProbeOptions(**opts, allow_missing=True, l2_grid=[0.1]))
        assert info["splits"]["train"]["videos"] == 5 and paths[-1] in info["splits"]["train"]["left_out"][0]


@pytest.fixture(scope="module")
def probed(synthetic_root, tmp_path_factory):
    """Features of a random-weight 8-class backbone for the train and val videos of 4 synthetic
    classes (one window each: the whole test view), then the probe tool, as a process."""
    from videoattn.apps.extract import extract_features

    tmp = tmp_path_factory.mktemp("linear_probe")
    classes = open(os.path.join(synthetic_root, "classes.txt")).read().splitlines()[:CLASSES]
    (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes))
    for split in ("train", "val"):
        with open(os.path.join(synthetic_root, f"{split}.csv"), newline="") as f:
            rows = [r for r in csv.reader(f)]
        with open(tmp / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r[0] in classes])
    data = {"root": synthetic_root, "classes": str(tmp / "classes.txt")}
    cfg_path = write_config(str(tmp / "cfg.yaml"), data)
    backbone_cfg = load_config(cfg_path, ["features.stride_seconds=100"])
    ckpt = make_random_checkpoint(backbone_cfg, str(tmp / "backbone.pyth"))
    feats = str(tmp / "features")
    lists = tmp / "videos.csv"
    lists.write_text(open(tmp / "train.csv").read() + "".join(open(tmp / "val.csv").readlines()[1:]))
    extract_features(backbone_cfg, str(lists), feats, ckpt)
    probe_out = str(tmp / "probe")
    spec = importlib.util.spec_from_file_location("linear_probe_tool", os.path.join(REPO, "tools", "linear_probe.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    logger, stdout = logging.getLogger("videoattn"), io.StringIO()
    saved = (list(logger.handlers), logger.level, logger.propagate)
    with contextlib.redirect_stdout(stdout):  # the tool in this process (a test_net process follows)
        tool.main(
            ["--config", cfg_path, "--checkpoint", ckpt, "--features", feats]
            + ["--train-annotations", str(tmp / "train.csv"), "--val-annotations", str(tmp / "val.csv")]
            + ["--output", probe_out, "--l2", "1e-3,1e-2,1e-1"]
        )
    logger.handlers[:], logger.level, logger.propagate = saved
    return dict(tmp=tmp, cfg=cfg_path, probe=probe_out, stdout=stdout.getvalue())


@pytest.mark.slow
def test_probe_checkpoint_gives_the_probes_predictions_in_test_net(probed):
    out = probed["probe"]
    info = json.load(open(os.path.join(out, "probe.json")))
    assert "<- picked" in probed["stdout"] and "95% CI" in probed["stdout"]
    assert info["checkpoint"] and len(info["selection"]["grid"]) == 3 and info["fit"]["converged"]
    test_dir = str(probed["tmp"] / "test")
    check(
        run(
            ["tools/test_net.py", "--config", probed["cfg"], "--checkpoint", info["checkpoint"]]
            + [f"model.num_classes={CLASSES}", f"data.classes_file={os.path.join(out, 'classes.txt')}"]
            + [f"data.test_split={probed['tmp'] / 'val.csv'}", f"output_dir={test_dir}"]
            + ["test.num_ensemble_views=1", "test.num_spatial_crops=1", "test.save_logits=true"]
        )
    )
    views = np.load(os.path.join(test_dir, "test", "view_logits.npz"))
    by_path = {str(views["paths"][v]): views["logits"][i] for i, v in enumerate(views["video_index"])}
    with open(os.path.join(out, "predictions.csv"), newline="") as f:
        val_paths = [r["path"] for r in csv.DictReader(f) if r["split"] == "val"]
    probe_logits = np.load(os.path.join(out, "logits.npz"))["val_logits"]
    net_logits = np.stack([by_path[p] for p in val_paths])
    assert len(val_paths) == 2 * CLASSES
    assert (net_logits.argmax(1) == probe_logits.argmax(1)).all()
    # test_net's float32 forward of the same decoded clip vs the probe's float64 logits of the saved
    # float32 features: features agree to ~1e-5 relative (tests/engine/test_extract.py), the folded
    # float32 head adds ~1e-6; logits here are O(1-10)
    np.testing.assert_allclose(net_logits, probe_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_backbone_other_than_the_features_is_refused(probed):
    cfg = load_config(probed["cfg"])
    other = make_random_checkpoint(cfg, str(probed["tmp"] / "other.pyth"), seed=1)
    tmp = probed["tmp"]
    opts = ProbeOptions([str(tmp / "features")], str(tmp / "train.csv"), str(tmp / "refused"), str(tmp / "val.csv"))
    with pytest.raises(UsageError, match="the features came from .*backbone.pyth, not from .*other.pyth"):
        run_probe(cfg, ProbeOptions(**dict(vars(opts), checkpoint=other)))
    assert not os.path.exists(opts.output)
