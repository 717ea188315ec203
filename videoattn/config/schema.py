"""The typed configuration schema: every key, its type and its default, in one place.

Sections follow the data's path: ``data`` -> ``model`` -> ``solver``/``bn``/``train`` ->
``test``/``features``. Key names follow PySlowFast where one exists (lower-case, dotted).
A YAML file or a ``key=value`` override may only set keys declared here; see
:func:`videoattn.config.load_config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class DataConfig:
    root: str = "data/synthetic"          # dataset root; relative split paths resolve against it
    train_split: str = "train.csv"        # Kinetics CSV, PySlowFast list (.txt) or a folder per class
    val_split: str = "val.csv"
    test_split: str = ""                  # empty: tools/test_net.py falls back to val_split
    classes_file: str = ""                # one class name per line; empty: sorted training labels
    num_frames: int = 8                   # frames per clip (T)
    sampling_rate: int = 8                # frame stride, counted at target_fps
    target_fps: float = 30.0              # fps at which sampling_rate is counted (PySlowFast: 30)
    train_jitter_scales: List[int] = field(default_factory=lambda: [256, 320])  # short side [min, max]
    train_crop_size: int = 224
    test_crop_size: int = 256
    random_flip: bool = True              # switch off for left/right-sensitive classes
    mean: List[float] = field(default_factory=lambda: [0.45, 0.45, 0.45])
    std: List[float] = field(default_factory=lambda: [0.225, 0.225, 0.225])
    num_workers: int = 4                  # DataLoader workers per process
    decode_threads: int = 1               # decord decoding threads per reader
    decoding_backend: str = "decord"      # decord (PyAV once per broken file) | pyav (PyAV only)
    decode_timeout: float = 30.0          # seconds one clip may take to decode before it counts as broken
    num_retries: int = 10                 # train/val: other videos tried before a broken sample raises
    pin_memory: bool = True               # only takes effect on CUDA
    normalize_on_device: bool = False     # workers send uint8 clips, normalised on the device (4x less traffic)
    prefetch_factor: int = 2


@dataclass
class NonLocalConfig:
    # Block indices per stage [res2, res3, res4, res5] that are followed by a non-local block
    # (PySlowFast NONLOCAL.LOCATION without the pathway level). I3D_NLN_8x8_R50: [[], [1, 3], [1, 3, 5], []].
    locations: List[List[int]] = field(default_factory=lambda: [[], [], [], []])
    instantiation: str = "embedded_gaussian"  # embedded_gaussian | dot_product | gaussian | concatenation
    subsample: List[int] = field(default_factory=lambda: [1, 2, 2])  # max-pool (t, h, w) on phi and g
    inter_ratio: float = 0.5              # inter-channels = ratio * C


@dataclass
class CBAMConfig:
    stages: List[int] = field(default_factory=list)  # stages (2..5) whose every block carries CBAM
    reduction: int = 16                   # channel-attention MLP reduction
    kernel_size: int = 7                  # spatial-attention 2D kernel


@dataclass
class ModelConfig:
    preset: str = ""                      # a name from videoattn.models.PRESETS; fills the keys below
    depth: int = 50                       # 18 | 34 | 50 | 101 | 152
    base_channels: int = 64               # width of res2's 3x3 conv (64 = standard; 8/16 = tiny CPU models)
    temporal: str = "i3d"                 # temporal kernel pattern: i3d | c2d | slow
    num_classes: int = 400
    dropout: float = 0.5
    channels_last: bool = False           # channels_last_3d weights (inputs converted by the engine)
    non_local: NonLocalConfig = field(default_factory=NonLocalConfig)
    cbam: CBAMConfig = field(default_factory=CBAMConfig)


@dataclass
class SolverConfig:
    base_lr: float = 0.1                  # for train.batch_size; not rescaled automatically
    lr_policy: str = "cosine"             # cosine | steps
    steps: List[int] = field(default_factory=list)   # epochs at which steps policy multiplies by gamma
    gamma: float = 0.1
    max_epoch: int = 10
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.01
    cosine_end_lr: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    zero_wd_1d_param: bool = False        # exclude BN weights/biases and all biases from weight decay


@dataclass
class BNConfig:
    sync: bool = False                    # SyncBatchNorm across processes (CUDA only)
    use_precise_stats: bool = False       # recompute BN statistics before each evaluation
    num_batches_precise: int = 200


@dataclass
class TrainConfig:
    enable: bool = True
    batch_size: int = 64                  # global batch (all processes), as PySlowFast
    eval_period: int = 1                  # epochs between validations
    checkpoint_period: int = 1            # epochs between checkpoints
    keep_last: int = 3                    # periodic checkpoints kept (best and final are kept too)
    auto_resume: bool = True              # resume from the newest valid checkpoint in output_dir
    checkpoint_file: str = ""             # initial weights (fine-tuning); ignored when resuming
    trust_checkpoint: bool = False        # allow checkpoints that need full unpickling (runs code!): trusted files only
    mixed_precision: str = "none"         # none | bf16 | fp16 (CUDA; on CPU only bf16, when asked)
    clip_grad_norm: float = 0.0           # 0 = off
    accumulation_steps: int = 1
    log_period: int = 10                  # iterations between log lines / metrics rows
    compile: bool = False                 # torch.compile the training model (default mode)


@dataclass
class TestConfig:
    enable: bool = True
    batch_size: int = 8                   # views per step (global)
    checkpoint_file: str = ""
    num_ensemble_views: int = 10          # temporal clips per video
    num_spatial_crops: int = 3            # 1 = centre; 3 = left/centre/right (top/centre/bottom if portrait)
    aggregation: str = "softmax"          # softmax | sum | max
    save_logits: bool = False             # also write per-view logits (.npz)


@dataclass
class FeaturesConfig:
    stride_frames: int = 0                # window stride in frames at target_fps; 0 = one window length
    stride_seconds: float = 0.0           # if > 0, overrides stride_frames
    layer: str = "pool"                   # pool (forward_features) | res2 | res3 | res4 | res5
    num_spatial_crops: int = 1
    average_crops: bool = True
    dtype: str = "float32"                # float32 | float16
    batch_size: int = 8                   # windows per forward pass


@dataclass
class Config:
    output_dir: str = "output"
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    bn: BNConfig = field(default_factory=BNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
