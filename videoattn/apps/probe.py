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

Outputs in ``--output``: ``probe.json`` (every number), ``head.npz`` (the probe on standardised
features, the train mean/std and the folded head), ``predictions.csv``, ``logits.npz`` (per split:
``<split>_logits (N, C)`` float64 in predictions.csv's order), ``classes.txt`` and ``probe.pyth``;
none replaces a file this tool did not write (:mod:`videoattn.utils.outputs`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from videoattn.apps.probe_data import ProbeSplit, load_split, probe_classes, read_feature_index
from videoattn.apps.probe_fit import (
    DEFAULT_L2_GRID,
    GridPoint,
    LinearFit,
    Standardiser,
    fit_logistic,
    grid_point,
    kfold_assignment,
    pick,
    score,
)
from videoattn.config import Config, config_to_dict
from videoattn.engine.checkpoint import HEAD_PREFIX, make_checkpoint, save_checkpoint
from videoattn.engine.inference import load_inference_model
from videoattn.utils.download import sha256_file
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
class Backbone:
    """The backbone's weights and where they came from (None: no checkpoint is written)."""

    state: Dict[str, torch.Tensor]
    source: str
    feature_dim: int


@dataclass
class Selection:
    """The grid, the pick, and how it was validated."""

    points: List[GridPoint]
    picked: GridPoint
    how: str
    seconds: float = 0.0
    fits: int = 0
    notes: List[str] = field(default_factory=list)


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


def training_samples(split: ProbeSplit, per: str) -> tuple:
    """``(x (M, D), y (M,), video (M,))``: per video one sample, per clip one per window."""
    if per == "video":
        return split.videos(), split.labels, np.arange(len(split.labels))
    c = split.clips()
    return c.x, c.labels, c.video


def fit_split(split: ProbeSplit, per: str, num_classes: int, l2: float, keep: Optional[np.ndarray] = None):
    """``(standardiser, fit)`` on ``split``'s videos ``keep`` (bool (N,); default all)."""
    x, y, video = training_samples(split, per)
    if keep is not None:
        x, y = x[keep[video]], y[keep[video]]
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


def recorded_weights(splits: Dict[str, ProbeSplit]) -> str:
    """The one source of weights the features record ("" if they record none: extracted before
    extract_features wrote it); features of several are refused."""
    found = sorted({w for s in splits.values() for w in s.weights} - {""})
    if len(found) > 1:
        raise UsageError(
            f"the features come from {len(found)} different weights ({found[0]}; {found[1]}): use one backbone"
        )
    return found[0] if found else ""


def check_backbone(recorded: str, o: ProbeOptions) -> None:
    """One line if the backbone given is not the one the features were extracted with (a file of
    the same content elsewhere passes; a recorded file that is gone only gets a warning)."""
    if not recorded:
        log.warning("probe: the features do not say which weights they came from; trusting --checkpoint/--pretrained")
        return
    if recorded.startswith("pretrained:"):
        same = o.pretrained == recorded.split(":", 1)[1].split(" ", 1)[0]
    elif o.pretrained or not os.path.isfile(recorded):
        same = not o.pretrained
        if same:
            log.warning("probe: the features came from %s, which is gone; trusting --checkpoint", recorded)
    else:
        same = os.path.samefile(recorded, o.checkpoint) or sha256_file(recorded) == sha256_file(o.checkpoint)
    if not same:
        raise UsageError(
            f"the features came from {recorded}, not from {o.checkpoint or 'pretrained:' + o.pretrained}; "
            "the probe's checkpoint needs the backbone the features came from"
        )


def load_backbone(cfg: Config, o: ProbeOptions, layer: str, dim: int) -> Optional[Backbone]:
    """The backbone's ``model_state`` (None without ``--checkpoint`` / ``--pretrained``); one line
    if the features cannot be its head's input."""
    if not (o.checkpoint or o.pretrained):
        return None
    if layer != "pool":
        raise UsageError(
            f"features of layer {layer!r} are not the head's input; a checkpoint needs features.layer=pool "
            f"(or leave out --checkpoint/--pretrained for the probe's numbers alone)"
        )
    model, weights = load_inference_model(cfg, o.checkpoint or None, torch.device("cpu"), False, o.trust, o.pretrained)
    proj = model.head.proj
    if proj.in_features != dim:
        raise UsageError(f"the features are {dim}-d but {weights.source}'s head takes {proj.in_features}-d input")
    return Backbone({k: v.detach().clone() for k, v in model.state_dict().items()}, weights.source, dim)


def fold_head(fit: LinearFit, std: Standardiser) -> Dict[str, torch.Tensor]:
    """``head.proj`` weights on raw features: ``W' = W / std``, ``b' = b - W (mean / std)`` (float32)."""
    w, b = fit.weight.numpy(), fit.bias.numpy()
    return {
        HEAD_PREFIX + "weight": torch.from_numpy(w / std.std[None, :]).float(),
        HEAD_PREFIX + "bias": torch.from_numpy(b - w @ (std.mean / std.std)).float(),
    }


def probe_checkpoint(cfg: Config, backbone: Backbone, head: Dict[str, torch.Tensor], classes: List[str], info: dict):
    """The backbone's checkpoint with the probe as its head (``model.num_classes`` = the probe's)."""
    state = dict(backbone.state)
    state.update(head)
    config = config_to_dict(cfg)
    config["model"]["num_classes"] = len(classes)
    return make_checkpoint(state, config, source=TOOL, classes=list(classes), probe=info)


def write_head(path: str, fit: LinearFit, std: Standardiser, head: Dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            weight=fit.weight.numpy(),
            bias=fit.bias.numpy(),
            mean=std.mean,
            std=std.std,
            folded_weight=head[HEAD_PREFIX + "weight"].numpy(),
            folded_bias=head[HEAD_PREFIX + "bias"].numpy(),
        )


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


def run_probe(cfg: Config, o: ProbeOptions) -> dict:
    """Fit, pick, score and write the probe (module docstring); returns what probe.json holds."""
    check_options(o)
    index = read_feature_index(o.features)
    classes = probe_classes(cfg.data, o.train)
    named = [(n, a) for n, a in (("train", o.train), ("val", o.val), ("test", o.test)) if a]
    splits = {n: load_split(n, a, o.train, cfg.data, index, o.allow_missing) for n, a in named}
    train = splits["train"]
    check_classes(train, classes, cfg.data.classes_file or f"the labels of {o.train}")
    dims = sorted({s.windows[0].shape[1] for s in splits.values()})
    if len(dims) > 1:
        raise UsageError(f"the splits' features have different sizes {dims}")
    weights = recorded_weights(splits)
    backbone = load_backbone(cfg, o, index.layer, dims[0])  # a bad checkpoint fails before any fit
    if backbone is not None:
        check_backbone(weights, o)
    os.makedirs(o.output, exist_ok=True)
    claim_outputs(o.output, TOOL, OUTPUTS, hint="use another --output")
    x, _, _ = training_samples(train, o.per)
    log.info(
        "probe: %d classes, %d-d %s features, %s; %s",
        len(classes),
        dims[0],
        index.layer,
        f"{len(x)} training samples (per {o.per}) of {len(train.labels)} videos",
        ", ".join(
            f"{len(s.labels)} {n} videos" + (f" ({len(s.left_out)} left out)" if s.left_out else "")
            for n, s in splits.items()
        ),
    )
    sel = select_l2(train, splits.get("val"), o, len(classes), cfg.seed)
    log_selection(sel, len(x))
    t0 = time.perf_counter()
    std, fit = fit_split(train, o.per, len(classes), sel.picked.l2)
    fit_s = time.perf_counter() - t0
    if not all(bool(torch.isfinite(t).all()) for t in (fit.weight, fit.bias)):
        raise UsageError(f"the probe's weights are not finite (l2 {fit.l2:g}); try larger --l2 values")
    logits = {n: fit.logits(std(s.videos())) for n, s in splits.items()}
    scores = {n: score(logits[n], s.labels) for n, s in splits.items()}
    for n, s in scores.items():
        note = " (the L2 weight was picked on it: optimistic)" if n == "val" else ""
        log.info("probe %s: %s%s", n, s.line(), note)
    head = fold_head(fit, std)
    info = dict(
        features=[os.path.abspath(f) for f in o.features],
        layer=index.layer,
        per=o.per,
        features_weights=weights or None,
        backbone=backbone.source if backbone else None,
        classes=classes,
        feature_dim=dims[0],
        splits={n: dict(annotations=a, videos=len(splits[n].labels), left_out=splits[n].left_out) for n, a in named},
        selection=dict(
            how=sel.how,
            picked_l2=sel.picked.l2,
            seconds=sel.seconds,
            fits=sel.fits,
            grid=[dict(vars(p), sklearn_C=1.0 / (p.l2 * len(x))) for p in sel.points],
        ),
        fit=dict(
            l2=fit.l2,
            sklearn_C=1.0 / (fit.l2 * len(x)),
            samples=len(x),
            loss=fit.loss,
            grad_max=fit.grad_max,
            iterations=fit.iterations,
            converged=fit.converged,
            seconds=fit_s,
        ),
        results={n: vars(s) for n, s in scores.items()},
        ci="95% Wilson score interval of top-1 over videos (each video one trial)",
    )
    if not fit.converged:
        log.warning("probe: L-BFGS stopped at max |gradient| %.2g after %d iterations", fit.grad_max, fit.iterations)
    write_outputs(cfg, o, info, splits, logits, classes, fit, std, head, backbone)
    return info


def write_outputs(cfg, o, info, splits, logits, classes, fit, std, head, backbone) -> None:
    """Every file of the module docstring (``probe.pyth`` only with a backbone)."""
    out = o.output
    atomic_write_text(os.path.join(out, "classes.txt"), "".join(c + "\n" for c in classes))
    write_head(os.path.join(out, "head.npz"), fit, std, head)
    rows = []
    for n, s in splits.items():
        prob = torch.softmax(logits[n], dim=1)
        for i, path in enumerate(s.paths):
            k = int(prob[i].argmax())
            rows.append([n, path, classes[s.labels[i]], classes[k], f"{float(prob[i, k]):.6f}", int(k == s.labels[i])])
    atomic_write_csv(
        os.path.join(out, "predictions.csv"), ["split", "path", "label", "prediction", "score", "correct"], rows
    )
    with atomic_path(os.path.join(out, "logits.npz")) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"{n}_logits": v.numpy() for n, v in logits.items()})
    if backbone is not None:
        ckpt_path = os.path.join(out, "probe.pyth")
        info["checkpoint"] = ckpt_path
        extra = dict(info, mean=torch.from_numpy(std.mean), std=torch.from_numpy(std.std))
        save_checkpoint(ckpt_path, probe_checkpoint(cfg, backbone, head, classes, extra))
        log.info(
            "probe: checkpoint %s (the backbone's weights, this probe as its %d-class head); test it with "
            "tools/test_net.py --checkpoint %s model.num_classes=%d data.classes_file=%s",
            ckpt_path,
            len(classes),
            ckpt_path,
            len(classes),
            os.path.abspath(os.path.join(out, "classes.txt")),
        )
    else:
        info["checkpoint"] = None
        log.info("probe: no checkpoint written (give the backbone with --checkpoint or --pretrained for one)")
    atomic_write_json(os.path.join(out, "probe.json"), info)
    log.info("probe: %s", os.path.join(out, "probe.json"))
