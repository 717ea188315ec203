"""Linear probes on extracted features (what ``tools/linear_probe.py`` runs).

A multinomial logistic regression with L2 (:mod:`videoattn.apps.probe_fit`) on the window features
of ``tools/extract_features.py`` (:mod:`videoattn.apps.probe_data`): per video, the mean of its
windows (``per="video"``), or every window a training sample (``per="clip"``; a video is then scored
by the mean of its windows' logits, which for a linear head equals the logits of its mean window).
The L2 weight is picked from a log grid on the validation split, or by stratified k-fold over the
training videos (a video's windows stay in one fold); the final probe is fitted on the training
split with the picked weight. Accuracy gets a 95% Wilson interval over videos.

With the backbone the features came from (``--checkpoint`` / ``--pretrained``, ``features.layer=pool``:
the head's input), it writes ``probe.pyth``: the backbone's ``model_state`` with ``head.proj``
replaced by the probe, standardisation folded in (``W' = W / std``, ``b' = b - W (mean / std)``), so
``test_net`` / ``predict`` run it with ``model.num_classes`` = the probe's class count. The head's
dropout is the identity in eval mode, and ``pool`` features are exactly what ``head.proj`` sees.
(:mod:`videoattn.apps.probe_head`; the features' recorded weights must be that backbone).

Outputs in ``--output``: ``probe.json`` (every number), ``head.npz`` (the probe on standardised
features, the train mean/std and the folded head), ``predictions.csv``, ``logits.npz`` (per split:
``<split>_logits (N, C)`` float64 in predictions.csv's order), ``classes.txt`` and ``probe.pyth``;
none replaces a file this tool did not write (:mod:`videoattn.utils.outputs`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from videoattn.apps.probe_data import ClipSamples, ProbeSplit, load_split, probe_classes, read_feature_index
from videoattn.apps.probe_fit import (
    DEFAULT_L2_GRID,
    GridPoint,
    LinearFit,
    Scores,
    Standardiser,
    fit_logistic,
    grid_point,
    kfold_assignment,
    pick,
    score,
)
from videoattn.apps.probe_head import (
    Backbone,
    BackboneSpec,
    check_backbone,
    fold_head,
    load_backbone,
    probe_checkpoint,
    recorded_weights,
    write_head,
)
from videoattn.config import Config
from videoattn.engine.checkpoint import save_checkpoint
from videoattn.utils.errors import UsageError
from videoattn.utils.io import atomic_path, atomic_write_csv, atomic_write_json, atomic_write_text
from videoattn.utils.outputs import claim_outputs

log = logging.getLogger(__name__)
TOOL = "linear_probe"
OUTPUTS = ["probe.json", "head.npz", "predictions.csv", "logits.npz", "classes.txt", "probe.pyth"]


@dataclass
class ProbeOptions:
    """What ``tools/linear_probe.py`` was asked (paths of annotations resolve against ``data.root``)."""

    features: Sequence[str]
    train: str
    output: str
    val: str = ""
    test: str = ""
    per: str = "video"  # video | clip
    folds: int = 0
    l2_grid: Sequence[float] = DEFAULT_L2_GRID
    allow_missing: bool = False
    checkpoint: str = ""  # the backbone the features came from (for probe.pyth)
    pretrained: str = ""
    trust: bool = False


@dataclass
class Selection:
    """The grid, the pick, and how it was validated."""

    points: List[GridPoint]
    picked: GridPoint
    how: str
    seconds: float = 0.0
    fits: int = 0


def check_options(o: ProbeOptions) -> None:
    if o.per not in ("video", "clip"):
        raise UsageError(f"--per {o.per}: use video or clip")
    if o.val and o.folds:
        raise UsageError(
            "give --val-annotations or --folds K, not both (k-fold is for a set without a validation split)"
        )
    if not o.val and o.folds < 2:
        raise UsageError("the L2 weight is picked on --val-annotations, or by --folds K (K >= 2) on the training set")
    if not o.l2_grid or any(not (v > 0 and np.isfinite(v)) for v in o.l2_grid):
        raise UsageError(f"--l2 {list(o.l2_grid)}: the L2 weights must be positive numbers")


def training_samples(split: ProbeSplit, per: str) -> ClipSamples:
    """Per video one sample (its mean window), per clip one per window."""
    if per == "video":
        return ClipSamples(split.videos(), split.labels, np.arange(len(split.labels)))
    return split.clips()


def fit_split(
    split: ProbeSplit, per: str, num_classes: int, l2: float, keep: Optional[np.ndarray] = None
) -> Tuple[Standardiser, LinearFit]:
    """``(standardiser, fit)`` on ``split``'s videos ``keep`` (bool (N,); default all)."""
    t = training_samples(split, per)
    x, y = (t.x, t.labels) if keep is None else (t.x[keep[t.video]], t.labels[keep[t.video]])
    std = Standardiser.fit(x)
    return std, fit_logistic(std(x), y, num_classes, l2)


def select_l2(train: ProbeSplit, val: Optional[ProbeSplit], o: ProbeOptions, num_classes: int, seed: int) -> Selection:
    """Fit every grid weight; score on ``val`` or by ``o.folds``-fold over the training videos."""
    t0, points, fits = time.perf_counter(), [], 0
    if val is not None:
        folds = [(np.ones(len(train.labels), dtype=bool), val.videos(), val.labels)]
        how = f"validation split ({len(val.labels)} videos)"
    else:
        fold_of = kfold_assignment(train.labels, o.folds, seed)
        held = train.videos()
        folds = [(fold_of != k, held[fold_of == k], train.labels[fold_of == k]) for k in range(o.folds)]
        how = f"{o.folds}-fold over the {len(train.labels)} training videos (stratified, seed {seed})"
    for l2 in sorted(o.l2_grid):
        done = [fit_split(train, o.per, num_classes, l2, keep) for keep, _, _ in folds]
        fits += len(done)
        held_out = [{"z": s(x), "y": y} for (s, _), (_, x, y) in zip(done, folds)]
        points.append(grid_point(l2, [f for _, f in done], held_out))
    return Selection(points, pick(points), how, time.perf_counter() - t0, fits)


def check_classes(train: ProbeSplit, classes: List[str], source: str) -> None:
    """Every class of the class list needs a training video (a probe cannot learn one it never sees)."""
    counts = np.bincount(train.labels, minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UsageError(
            f"class count mismatch: {source} has {len(classes)} classes but the training annotations have videos of "
            f"{len(classes) - len(empty)}; none of {empty[:5]}{' ...' if len(empty) > 5 else ''}: "
            f"give a class list of the trained classes (data.classes_file)"
        )


def log_selection(sel: Selection, num_train: int) -> None:
    log.info("probe: L2 weight picked on the %s (%d fits, %.2f s):", sel.how, sel.fits, sel.seconds)
    for p in sel.points:
        log.info(
            "  l2 %-8.3g (sklearn C %-8.3g) val top-1 %5.1f%%  loss %.4f%s%s",
            p.l2,
            1.0 / (p.l2 * num_train),
            100 * p.top1,
            p.loss,
            "" if p.converged else "  (not converged)",
            "  <- picked" if p is sel.picked else "",
        )


@dataclass
class ProbeInputs:
    """Everything checked before anything is written."""

    splits: Dict[str, ProbeSplit]  # train, and val / test where given
    annotations: Dict[str, str]  # split -> its annotation file
    classes: List[str]
    layer: str
    dim: int
    weights: str  # where the features' weights came from ("" unknown)
    backbone: Optional[Backbone]


@dataclass
class Probe:
    """The final probe and its logits (``(N, C)`` float64 per split) and scores."""

    std: Standardiser
    fit: LinearFit
    seconds: float
    head: Dict[str, torch.Tensor]  # the folded head.proj
    logits: Dict[str, torch.Tensor]
    scores: Dict[str, Scores]


def load_inputs(cfg: Config, o: ProbeOptions) -> ProbeInputs:
    """Features, annotations and backbone, each checked (one line for what does not fit)."""
    check_options(o)
    index = read_feature_index(o.features)
    classes = probe_classes(cfg.data, o.train)
    named = {n: a for n, a in (("train", o.train), ("val", o.val), ("test", o.test)) if a}
    splits = {n: load_split(n, a, o.train, cfg.data, index, o.allow_missing) for n, a in named.items()}
    check_classes(splits["train"], classes, cfg.data.classes_file or f"the labels of {o.train}")
    dims = sorted({s.windows[0].shape[1] for s in splits.values()})
    if len(dims) > 1:
        raise UsageError(f"the splits' features have different sizes {dims}")
    weights = recorded_weights(splits)
    spec = BackboneSpec(o.checkpoint, o.pretrained, o.trust)
    backbone = load_backbone(cfg, spec, index.layer, dims[0])  # a bad checkpoint fails before any fit
    if backbone is not None:
        check_backbone(weights, spec)
    return ProbeInputs(splits, named, classes, index.layer, dims[0], weights, backbone)


def fit_probe(inputs: ProbeInputs, o: ProbeOptions, l2: float) -> Probe:
    """The final fit on the training split, folded and scored on every split."""
    t0 = time.perf_counter()
    std, fit = fit_split(inputs.splits["train"], o.per, len(inputs.classes), l2)
    seconds = time.perf_counter() - t0
    if not all(bool(torch.isfinite(t).all()) for t in (fit.weight, fit.bias)):
        raise UsageError(f"the probe's weights are not finite (l2 {fit.l2:g}); try larger --l2 values")
    if not fit.converged:
        log.warning("probe: L-BFGS stopped at max |gradient| %.2g after %d iterations", fit.grad_max, fit.iterations)
    logits = {n: fit.logits(std(s.videos())) for n, s in inputs.splits.items()}
    scores = {n: score(logits[n], s.labels) for n, s in inputs.splits.items()}
    for n, sc in scores.items():
        log.info("probe %s: %s%s", n, sc.line(), " (the L2 weight was picked on it: optimistic)" if n == "val" else "")
    return Probe(std, fit, seconds, fold_head(fit, std), logits, scores)


def run_probe(cfg: Config, o: ProbeOptions) -> dict:
    """Fit, pick, score and write the probe (module docstring); returns what probe.json holds."""
    inputs = load_inputs(cfg, o)
    os.makedirs(o.output, exist_ok=True)
    claim_outputs(o.output, TOOL, OUTPUTS, hint="use another --output")
    train = inputs.splits["train"]
    samples = len(training_samples(train, o.per).labels)
    log.info(
        "probe: %d classes, %d-d %s features, %d training samples (per %s); %s",
        len(inputs.classes),
        inputs.dim,
        inputs.layer,
        samples,
        o.per,
        ", ".join(
            f"{len(s.labels)} {n} videos" + (f" ({len(s.left_out)} left out)" if s.left_out else "")
            for n, s in inputs.splits.items()
        ),
    )
    sel = select_l2(train, inputs.splits.get("val"), o, len(inputs.classes), cfg.seed)
    log_selection(sel, samples)
    probe = fit_probe(inputs, o, sel.picked.l2)
    info = probe_record(inputs, o, sel, probe, samples)
    write_outputs(cfg, o.output, inputs, probe, info)
    return info


def probe_record(inputs: ProbeInputs, o: ProbeOptions, sel: Selection, probe: Probe, samples: int) -> dict:
    """What probe.json holds (every number of the run)."""
    fit = probe.fit
    return dict(
        features=[os.path.abspath(f) for f in o.features],
        layer=inputs.layer,
        per=o.per,
        features_weights=inputs.weights or None,
        backbone=inputs.backbone.source if inputs.backbone else None,
        classes=inputs.classes,
        feature_dim=inputs.dim,
        splits={
            n: dict(annotations=a, videos=len(inputs.splits[n].labels), left_out=inputs.splits[n].left_out)
            for n, a in inputs.annotations.items()
        },
        selection=dict(
            how=sel.how,
            picked_l2=sel.picked.l2,
            seconds=sel.seconds,
            fits=sel.fits,
            grid=[dict(vars(p), sklearn_C=1.0 / (p.l2 * samples)) for p in sel.points],
        ),
        fit=dict(
            l2=fit.l2,
            sklearn_C=1.0 / (fit.l2 * samples),
            samples=samples,
            loss=fit.loss,
            grad_max=fit.grad_max,
            iterations=fit.iterations,
            converged=fit.converged,
            seconds=probe.seconds,
        ),
        results={n: vars(sc) for n, sc in probe.scores.items()},
        ci="95% Wilson score interval of top-1 over videos (each video one trial)",
    )


def write_predictions(out: str, inputs: ProbeInputs, probe: Probe) -> None:
    """``predictions.csv`` and ``logits.npz`` (same order)."""
    rows, classes = [], inputs.classes
    for n, s in inputs.splits.items():
        prob = torch.softmax(probe.logits[n], dim=1)
        for i, path in enumerate(s.paths):
            k = int(prob[i].argmax())
            rows.append([n, path, classes[s.labels[i]], classes[k], f"{float(prob[i, k]):.6f}", int(k == s.labels[i])])
    header = ["split", "path", "label", "prediction", "score", "correct"]
    atomic_write_csv(os.path.join(out, "predictions.csv"), header, rows)
    with atomic_path(os.path.join(out, "logits.npz")) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"{n}_logits": v.numpy() for n, v in probe.logits.items()})


def write_outputs(cfg: Config, out: str, inputs: ProbeInputs, probe: Probe, info: dict) -> None:
    """Every file of the module docstring (``probe.pyth`` only with a backbone); sets
    ``info["checkpoint"]``."""
    classes_txt = os.path.join(out, "classes.txt")
    atomic_write_text(classes_txt, "".join(c + "\n" for c in inputs.classes))
    write_head(os.path.join(out, "head.npz"), probe.fit, probe.std, probe.head)
    write_predictions(out, inputs, probe)
    info["checkpoint"] = None
    if inputs.backbone is not None:
        info["checkpoint"] = path = os.path.join(out, "probe.pyth")
        extra = dict(info, mean=torch.from_numpy(probe.std.mean), std=torch.from_numpy(probe.std.std))
        save_checkpoint(path, probe_checkpoint(cfg, inputs.backbone, probe.head, inputs.classes, extra))
        k = len(inputs.classes)
        log.info(
            "probe: checkpoint %s (the backbone's weights, this probe as its %d-class head); test it with "
            "tools/test_net.py --checkpoint %s model.num_classes=%d data.classes_file=%s",
            *(path, k, path, k, os.path.abspath(classes_txt)),
        )
    else:
        log.info("probe: no checkpoint written (give the backbone with --checkpoint or --pretrained for one)")
    atomic_write_json(os.path.join(out, "probe.json"), info)
    log.info("probe: %s", os.path.join(out, "probe.json"))
