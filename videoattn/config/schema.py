"""The typed configuration schema: every key, its type and its default, in one place.

Sections follow the data's path: ``data`` -> ``model`` -> ``solver``/``bn``/``train`` ->
``test``/``features``. Key names follow PySlowFast where one exists (lower-case, dotted).
A YAML file or a ``key=value`` override may only set keys declared here; see
:func:`videoattn.config.load_config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

# ------------------------------------------------------------------------------- value rules
# A rule sits next to its key: ``num_frames: int = at_least(1, 8)``. It is the field's metadata
# ``{"check": (ok(value) -> bool, "what the value must be")}``; ``load_config`` applies every rule
# after merging and names the file:line (or the override) of a value that breaks one. Every rule
# also refuses NaN and infinities (``inf``, ``1e400``) anywhere in the value.
NOT_FINITE = "be finite (no nan or inf)"


def finite(value: Any) -> bool:
    """False if ``value`` is, or (in a list) holds, a NaN or an infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(finite(v) for v in value)
    return True


def rule(default: Any, ok: Callable[[Any], bool], must: str) -> Any:
    """A field with ``default`` (a list is copied per instance) whose value must be finite and satisfy ``ok``."""
    meta = {"check": (lambda v: finite(v) and ok(v), must)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def at_least(low: float, default: Any) -> Any:
    return rule(default, lambda v: v >= low, f"be >= {low}")


def positive(default: Any) -> Any:
    return rule(default, lambda v: v > 0, "be > 0")


def fraction(default: float) -> Any:
    """In [0, 1): momentum, dropout."""
    return rule(default, lambda v: 0 <= v < 1, "be in [0, 1)")


def one_of(default: Any, choices: tuple) -> Any:
    return rule(default, lambda v: v in choices, "be one of " + " | ".join(map(str, choices)))


def each(default: list, ok: Callable[[Any], bool], must: str, length: Optional[int] = None) -> Any:
    """A list whose items all satisfy ``ok`` (and that has ``length`` items, if given)."""
    size = f"{length} values, each " if length is not None else "a list of values, each "
    return rule(default, lambda v: (length is None or len(v) == length) and all(ok(x) for x in v), f"be {size}{must}")


# What train.freeze may name: the backbone's stages in input order (videoattn.models.resnet3d; a test
# checks each is a module of the model). The head is never frozen (nothing would train).
FREEZABLE_STAGES = ("stem", "res2", "res3", "res4", "res5")


def _min_max(v) -> bool:
    return len(v) == 2 and 1 <= v[0] <= v[1]


@dataclass
class DataConfig:
    root: str = "data/synthetic"  # dataset root; relative split paths resolve against it
    train_split: str = "train.csv"  # Kinetics CSV, PySlowFast list (.txt) or a folder per class
    val_split: str = "val.csv"
    test_split: str = ""  # empty: tools/test_net.py falls back to val_split
    classes_file: str = ""  # one class name per line; kinetics400: the shipped Kinetics-400 list
    # (videoattn/resources); empty: sorted training labels
    num_frames: int = at_least(1, 8)  # frames per clip (T)
    sampling_rate: int = at_least(
        1, 8
    )  # frame stride, counted at target_fps (protocol mmaction2: the video's own frames)
    target_fps: float = positive(30.0)  # fps at which sampling_rate is counted (PySlowFast: 30)
    train_jitter_scales: List[int] = rule([256, 320], _min_max, "be [min, max] with 1 <= min <= max")  # short side
    train_crop_size: int = at_least(1, 224)
    test_crop_size: int = at_least(1, 256)
    random_flip: bool = True  # switch off for left/right-sensitive classes
    # Which frames and pixels make each clip (videoattn/data/protocols.py): pyslowfast = PySlowFast's
    # Kinetics dataset (train, val, test views and their order), mmaction2 = its I3D val/test pipelines,
    # videoattn = this project's own (test views spread over the whole video).
    protocol: str = one_of("pyslowfast", ("pyslowfast", "mmaction2", "videoattn"))
    # Validation view: "" = the protocol's own (pyslowfast: random; mmaction2, videoattn: centre);
    # random = training-style clip, scale, crop, flip (PySlowFast's), one fixed draw per video;
    # centre = the deterministic centre clip, short side train_jitter_scales[0], centre train_crop_size crop.
    val_mode: str = one_of("", ("", "random", "centre"))
    mean: List[float] = each([0.45, 0.45, 0.45], lambda x: True, "a number", length=3)  # R, G, B
    std: List[float] = each([0.225, 0.225, 0.225], lambda x: x > 0, "> 0", length=3)  # R, G, B
    num_workers: int = at_least(0, 4)  # DataLoader workers per process
    decode_threads: int = at_least(0, 1)  # decord decoding threads per reader (0: decord's choice); PyAV: 1
    # pyav: PyAV alone (the fastest per core, exact on every file kind tested: docs/benchmarks.md, decoders);
    # decord: the installed `import decord` (decord 0.6.0, or decord2 installed in its place), PyAV once per broken file
    decoding_backend: str = one_of("pyav", ("decord", "pyav"))
    decode_timeout: float = at_least(0, 30.0)  # s per clip decode before the video counts as broken; 0: no limit
    num_retries: int = at_least(0, 10)  # train/val: other videos tried before a broken sample raises
    # Training only: N clips of each video from one decode, each with its own augmentation (PySlowFast
    # AUG.NUM_SAMPLE, mmaction2 RepeatAugDataset). train.batch_size still counts clips, so each process
    # loads batch_size / processes / N videos per step and an epoch (one pass over the videos) has N
    # times the steps: divide solver.max_epoch and warmup_epochs by N to keep the number of updates.
    clips_per_video: int = at_least(1, 1)
    # Class imbalance in training (docs/data.md#class-balance). none: every video once per epoch.
    # sampler: each epoch draws as many videos as the set has, the same number of each class (rare
    # classes repeated, frequent ones a different subset each epoch); works with DDP and mid-epoch resume.
    # loss: cross-entropy weighted by N / (classes * videos of the class): mean weight 1 over the videos.
    balance: str = one_of("none", ("none", "sampler", "loss"))
    pin_memory: bool = True  # only takes effect on CUDA
    normalize_on_device: Optional[bool] = (
        None  # uint8 from the workers, normalised on the device (4x less traffic); null: on for CUDA
    )
    prefetch_factor: int = at_least(1, 2)


def preset_or(spec: Any) -> Any:
    """A model key that ``model.preset`` may fill: unset (None) unless a file or override sets it;
    ``spec`` (a rule above) checks a set value. Presets and the standard values of unset keys
    live in the model layer (:mod:`videoattn.models.presets`)."""
    ok, must = spec.metadata["check"]
    return field(default=None, metadata={"check": (lambda v: v is None or ok(v), must)})


@dataclass
class NonLocalConfig:
    # Block indices per stage [res2, res3, res4, res5] that are followed by a non-local block
    # (PySlowFast NONLOCAL.LOCATION without the pathway level). I3D_NLN_8x8_R50: [[], [1, 3], [1, 3, 5], []].
    locations: Optional[List[List[int]]] = preset_or(
        each([], lambda b: all(i >= 0 for i in b), "a list of indices >= 0", length=4)
    )  # none
    instantiation: Optional[str] = preset_or(
        one_of("", ("embedded_gaussian", "dot_product", "gaussian", "concatenation"))
    )  # embedded_gaussian
    subsample: Optional[List[int]] = preset_or(
        each([], lambda x: x >= 1, ">= 1", length=3)
    )  # [1, 2, 2]: max-pool (t, h, w) on phi, g
    inter_ratio: Optional[float] = preset_or(positive(0.0))  # 0.5: inter-channels = ratio * C
    # Which keys each query attends to (docs/model.md#attention-kinds); the weights are the same for
    # every kind, so a checkpoint trained with one runs with another. local: embedded_gaussian |
    # gaussian; axial: embedded_gaussian | gaussian; linear: embedded_gaussian | dot_product.
    attention: Optional[str] = preset_or(one_of("", ("full", "local", "axial", "linear")))  # full
    # local only: non-overlapping (t, h, w) windows in the block's input positions, each a multiple
    # of subsample; clipped to the feature map (so a large window is full attention).
    window: Optional[List[int]] = preset_or(each([], lambda x: x >= 1, ">= 1", length=3))  # [8, 14, 14]


@dataclass
class CBAMConfig:
    stages: Optional[List[int]] = preset_or(
        each([], lambda x: 2 <= x <= 5, "a stage in 2..5")
    )  # [] ; stages whose blocks carry CBAM
    reduction: Optional[int] = preset_or(at_least(1, 0))  # 16: channel-attention MLP reduction
    kernel_size: Optional[int] = preset_or(
        rule(0, lambda v: v >= 1 and v % 2 == 1, "be odd and >= 1")
    )  # 7: spatial 2D kernel
    # Which CBAM (videoattn/models/cbam.py, docs/model.md#cbam): official = the authors' released
    # code (MLP with biases; spatial max-then-mean pool, conv, BN whose weight starts at 0, so the
    # gate starts at 0.5); article = the paper's equations as tutorials give them (MLP without
    # biases; mean-then-max pool, conv, no BN); legacy = videoattn's form before this key existed
    # (MLP with biases; mean-then-max pool, conv, no BN): checkpoints written then hold it, and a
    # checkpoint of another form is refused with the override to use.
    variant: Optional[str] = preset_or(one_of("", ("official", "article", "legacy")))  # official
    # How the gates combine: channel_spatial = x * Mc, then * Ms of that (the paper);
    # spatial_channel the other way round; parallel = x * Mc(x) * Ms(x), both from the same x.
    order: Optional[str] = preset_or(one_of("", ("channel_spatial", "spatial_channel", "parallel")))  # channel_spatial
    gates: Optional[str] = preset_or(one_of("", ("both", "channel", "spatial")))  # both: the gates that exist


@dataclass
class ModelConfig:
    # Keys left unset (null) come from the preset, else from the standard values in the trailing
    # comments (videoattn.models.presets.STANDARD); the tools show the resolved values.
    preset: str = ""  # a name from videoattn.models.PRESETS, or "" for none
    depth: Optional[int] = preset_or(one_of(0, (18, 34, 50, 101, 152)))  # 50
    base_channels: Optional[int] = preset_or(at_least(1, 0))  # 64: res2's width (8/16 = tiny CPU models)
    temporal: Optional[str] = preset_or(one_of("", ("i3d", "c2d", "slow")))  # i3d: temporal kernel pattern
    num_classes: int = at_least(1, 400)
    dropout: float = fraction(0.5)
    # PySlowFast's RESNET.ZERO_INIT_FINAL_BN: each residual branch's last BN starts at 0 (the block starts
    # as the identity). False: at 1, as in the CBAM authors' ResNet. The demo's choice is measured there.
    zero_init_final_bn: bool = True
    channels_last: Optional[bool] = (
        None  # channels_last_3d weights and inputs; null: on for CPU (measured faster), off on CUDA
    )
    # Public weights by name (videoattn.models.pretrained.PRETRAINED: i3d_r50, c2d_r50, slow_r50,
    # resnet18_imagenet, resnet50_imagenet), downloaded once and verified. Training starts from them
    # (unless resuming); the inference tools use them when no checkpoint is found. "" = none.
    pretrained: str = rule("", lambda v: v == v.strip() and " " not in v, "be one name without spaces")
    non_local: NonLocalConfig = field(default_factory=NonLocalConfig)
    cbam: CBAMConfig = field(default_factory=CBAMConfig)


@dataclass
class SolverConfig:
    base_lr: float = positive(0.1)  # for train.batch_size; not rescaled automatically
    lr_policy: str = one_of("cosine", ("cosine", "steps"))
    steps: List[int] = each([], lambda x: x >= 0, "an epoch >= 0")  # epochs at which steps policy multiplies by gamma
    gamma: float = positive(0.1)
    max_epoch: int = at_least(1, 10)
    warmup_epochs: float = at_least(0, 0.0)
    warmup_start_lr: float = at_least(0, 0.01)
    cosine_end_lr: float = at_least(0, 0.0)
    momentum: float = fraction(0.9)
    nesterov: bool = True
    weight_decay: float = at_least(0, 1e-4)
    zero_wd_1d_param: bool = False  # exclude BN weights/biases and all biases from weight decay
    # Fine-tuning: each parameter group's LR is the schedule's rate (warm-up, cosine, steps) times its
    # multiplier; head = head.proj, backbone = everything else. Equal multipliers keep the two groups
    # (decay, no decay) of checkpoints written before these keys existed (they resume); unequal make
    # four (backbone, head) x (decay, no decay). Changing either (or train.freeze) breaks a resume.
    head_lr_mult: float = positive(1.0)
    backbone_lr_mult: float = positive(1.0)


@dataclass
class BNConfig:
    sync: bool = False  # SyncBatchNorm across processes (CUDA only)
    use_precise_stats: bool = False  # recompute BN statistics before each evaluation
    num_batches_precise: int = at_least(1, 200)


@dataclass
class TrainConfig:
    enable: bool = True
    batch_size: int = at_least(1, 64)  # global batch (all processes), as PySlowFast
    eval_period: int = at_least(0, 1)  # epochs between validations (0: none)
    checkpoint_period: int = at_least(1, 1)  # epochs between checkpoints
    checkpoint_period_minutes: float = at_least(0, 0.0)  # also a mid-epoch checkpoint every N minutes (0 = off)
    keep_last: int = at_least(0, 3)  # periodic checkpoints kept (0: all; best and final are kept too)
    auto_resume: bool = True  # resume from the newest valid checkpoint in output_dir
    checkpoint_file: str = ""  # initial weights (fine-tuning); ignored when resuming
    # Stages kept as they were loaded (fine-tuning): no gradient, not in the optimizer, and their BN
    # layers in eval mode (running statistics neither updated in training nor by precise BN).
    freeze: List[str] = each([], lambda x: x in FREEZABLE_STAGES, "one of " + " | ".join(FREEZABLE_STAGES))
    trust_checkpoint: bool = False  # allow checkpoints that need full unpickling (runs code!): trusted files only
    # auto: bf16 on CUDA, none on CPU; fp16: CUDA only
    mixed_precision: str = one_of("auto", ("auto", "none", "bf16", "fp16"))
    clip_grad_norm: float = at_least(0, 0.0)  # 0 = off
    accumulation_steps: int = at_least(1, 1)
    log_period: int = at_least(1, 10)  # iterations between log lines / metrics rows
    compile: bool = False  # torch.compile the training forward (default mode)


@dataclass
class TestConfig:
    enable: bool = True
    batch_size: int = at_least(1, 8)  # views per step (global)
    checkpoint_file: str = ""
    num_ensemble_views: int = at_least(1, 10)  # temporal clips per video
    num_spatial_crops: int = one_of(
        3, (1, 3)
    )  # 1 = centre; 3 along the long side, ordered as data.protocol's reference
    aggregation: str = one_of("softmax", ("softmax", "sum", "max"))
    save_logits: bool = False  # also write per-view logits (.npz)
    mixed_precision: str = one_of("auto", ("auto", "none", "bf16", "fp16"))  # inference autocast (test, features, ...)


@dataclass
class FeaturesConfig:
    stride_frames: int = at_least(0, 0)  # window stride in frames at target_fps; 0 = one window length
    stride_seconds: float = at_least(0, 0.0)  # if > 0, overrides stride_frames
    layer: str = one_of("pool", ("pool", "res2", "res3", "res4", "res5"))  # pool: forward_features
    num_spatial_crops: int = one_of(1, (1, 3))
    average_crops: bool = True
    dtype: str = one_of("float32", ("float32", "float16"))
    batch_size: int = at_least(1, 8)  # windows per forward pass
    save_scores: bool = False  # also write scores/<id>.npy: per-window class probabilities


@dataclass
class Config:
    output_dir: str = "output"
    seed: int = 0
    device: str = one_of("auto", ("auto", "cpu", "cuda"))
    dist_timeout_minutes: float = positive(30.0)  # how long a collective waits for a stalled process
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    bn: BNConfig = field(default_factory=BNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
