"""Config loading: schema defaults, _base_ files, overrides, file:line errors; and presets, which
the model layer expands (videoattn.models.presets)."""

import dataclasses
import glob
import os
import textwrap

import pytest

from videoattn.ablation.grid import load_cell_configs, load_grid
from videoattn.config import ConfigError, config_from_dict, config_to_dict, load_config, save_config
from videoattn.config.schema import Config
from videoattn.data.annotations import load_classes
from videoattn.models.presets import PRESETS, STANDARD, resolve_model_config
from videoattn.utils.resources import kinetics400_classes


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_defaults_equal_schema_dataclass():
    cfg = load_config()
    assert config_to_dict(cfg) == dataclasses.asdict(Config())


def test_yaml_and_overrides_merge_in_order(tmp_path):
    path = _write(
        tmp_path,
        "a.yaml",
        """
        solver:
          base_lr: 0.2
          max_epoch: 7
        data:
          num_frames: 16
        """,
    )
    cfg = load_config(path, ["solver.base_lr=0.05", "data.train_jitter_scales=[128,160]"])
    assert cfg.solver.base_lr == 0.05  # override beats file
    assert cfg.solver.max_epoch == 7  # file beats default
    assert cfg.data.num_frames == 16
    assert list(cfg.data.train_jitter_scales) == [128, 160]
    assert cfg.data.sampling_rate == Config().data.sampling_rate


def test_preset_fills_model_keys_and_file_wins(tmp_path):
    path = _write(
        tmp_path,
        "p.yaml",
        """
        model:
          preset: I3D_NL_CBAM_R18
          num_classes: 5
          cbam:
            reduction: 2
        """,
    )
    loaded = load_config(path)
    assert loaded.model.depth is None and loaded.model.cbam.reduction == 2  # the loader knows no presets
    cfg = dataclasses.replace(loaded, model=resolve_model_config(loaded.model))
    preset = PRESETS["I3D_NL_CBAM_R18"]
    assert cfg.model.depth == preset["depth"]
    assert cfg.model.base_channels == preset["base_channels"]
    assert [list(x) for x in cfg.model.non_local.locations] == preset["non_local"]["locations"]
    assert cfg.model.num_classes == 5
    assert cfg.model.cbam.reduction == 2  # file beats preset
    assert cfg.model.preset == "I3D_NL_CBAM_R18"
    assert cfg.model.cbam.kernel_size == STANDARD["cbam"]["kernel_size"]  # neither file nor preset: standard
    plain = resolve_model_config(load_config(None, ["model.depth=101"]).model)
    assert (plain.depth, plain.base_channels, plain.temporal) == (101, 64, "i3d")


def test_base_file_inheritance(tmp_path):
    _write(
        tmp_path,
        "base.yaml",
        """
        data:
          root: /videos
          num_frames: 4
        """,
    )
    child = _write(
        tmp_path,
        "child.yaml",
        """
        _base_: base.yaml
        data:
          num_frames: 6
        """,
    )
    cfg = load_config(child)
    assert cfg.data.root == "/videos" and cfg.data.num_frames == 6


def test_unknown_key_names_file_line_and_nearest(tmp_path):
    path = _write(
        tmp_path,
        "typo.yaml",
        """
        solver:
          base_lr: 0.1
        model:
          depth: 50
          num_clases: 5
        """,
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}:6" in msg  # line of the typo (after the leading blank line)
    assert "model.num_clases" in msg and "did you mean 'model.num_classes'" in msg


def test_unknown_key_in_base_file_reports_base_file(tmp_path):
    base = _write(tmp_path, "base.yaml", "data:\n  nun_frames: 4\n")
    child = _write(tmp_path, "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError, match=f"{base}:2.*data.num_frames"):
        load_config(child)


def test_unknown_override_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'solver.base_lr'"):
        load_config(None, ["solver.bse_lr=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(None, ["trian.batch_size=8"])


def test_wrong_type_names_key_and_line(tmp_path):
    path = _write(tmp_path, "t.yaml", "data:\n  root: x\n  num_frames: eight\n")
    with pytest.raises(ConfigError, match=f"{path}:3.*data.num_frames"):
        load_config(path)
    with pytest.raises(ConfigError, match="solver.base_lr"):
        load_config(None, ["solver.base_lr=fast"])


def test_unknown_preset_and_malformed_yaml(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'I3D_NL_R50'"):
        resolve_model_config(load_config(None, ["model.preset=I3D_NL_R5"]).model)
    bad = _write(tmp_path, "bad.yaml", "data:\n  root: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{bad}:\\d+: malformed YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_save_and_rebuild_round_trip(tmp_path):
    cfg = load_config(None, ["model.preset=I3D_NL_R50", "seed=3"])
    out = tmp_path / "cfg" / "config.yaml"
    save_config(cfg, str(out))
    assert load_config(str(out)) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name):
    model = resolve_model_config(load_config(None, [f"model.preset={name}"]).model)
    unset = [k for k, v in dataclasses.asdict(model).items() if v is None and k != "channels_last"]  # device-dependent
    assert model.depth == PRESETS[name]["depth"] and not unset, unset


CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


def test_shipped_yaml_configs_load():
    """Every shipped YAML loads; those outside ``_base_/`` (the ones to train) name a model preset.
    Ablation grids (``configs/ablations/``) are grid files: every cell's config loads."""
    paths = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))
    grids = [p for p in paths if os.sep + "ablations" + os.sep in p]
    bases = [p for p in paths if os.sep + "_base_" + os.sep in p]
    assert bases and len(paths) > len(bases) + len(grids), "no YAML configs shipped"
    for path in paths:
        if path in grids:
            grid = load_grid(path)
            assert all(cfg.model.preset in PRESETS for cfg in load_cell_configs(grid, "unused").values()), path
            continue
        cfg = load_config(path)
        if path not in bases:
            assert cfg.model.preset in PRESETS, path


def test_kinetics400_configs_share_the_base_recipe():
    """configs/kinetics400/*.yaml are the shared recipe plus a preset: loaded, each equals the base
    file with only model.preset set, and its class list is the shipped Kinetics-400 list."""
    base = config_to_dict(load_config(os.path.join(CONFIGS, "_base_", "kinetics400_i3d_8x8.yaml")))
    paths = sorted(glob.glob(os.path.join(CONFIGS, "kinetics400", "*.yaml")))
    assert len(paths) == 4
    for path in paths:
        cfg = load_config(path)
        assert cfg.model.preset == os.path.splitext(os.path.basename(path))[0]
        mine = config_to_dict(cfg)
        mine["model"]["preset"] = ""
        assert mine == base, path
        assert len(open(path).read().splitlines()) <= 6, f"{path}: the recipe belongs in the base file"
    assert base["data"]["classes_file"] == "kinetics400" and base["data"]["train_jitter_scales"] == [256, 320]
    names = load_classes("/nonexistent-root", base["data"]["classes_file"])
    assert names == kinetics400_classes() and len(names) == 400 and names[0] == "abseiling"


# ------------------------------------------------------------------------------ value ranges
BAD_VALUES = [
    ("data.num_frames", "0", ">= 1"),
    ("data.num_frames", "-4", ">= 1"),
    ("data.sampling_rate", "0", ">= 1"),
    ("data.target_fps", "0", "> 0"),
    ("solver.max_epoch", "0", ">= 1"),
    ("data.train_jitter_scales", "[320, 256]", "[min, max] with 1 <= min <= max"),
    ("data.train_jitter_scales", "[256]", "[min, max]"),
    ("data.train_crop_size", "0", ">= 1"),
    ("data.test_crop_size", "-1", ">= 1"),
    ("data.num_workers", "-1", ">= 0"),
    ("data.num_retries", "-1", ">= 0"),
    ("data.decode_timeout", "-5", ">= 0"),
    ("data.prefetch_factor", "0", ">= 1"),
    ("data.mean", "[0.5, 0.5]", "3 values"),
    ("data.std", "[0.2, 0.0, 0.2]", "3 values, each > 0"),
    ("data.decoding_backend", "opencv", "one of decord | pyav"),
    ("solver.base_lr", "0", "> 0"),
    ("solver.momentum", "1.0", "in [0, 1)"),
    ("data.balance", "oversample", "one of none | sampler | loss"),
    ("solver.lr_policy", "linear", "one of cosine | steps"),
    ("solver.weight_decay", "-0.1", ">= 0"),
    ("model.dropout", "1.0", "in [0, 1)"),
    ("model.num_classes", "0", ">= 1"),
    ("model.depth", "20", "one of 18 | 34 | 50 | 101 | 152"),
    ("model.temporal", "3d", "one of i3d | c2d | slow"),
    ("model.non_local.instantiation", "softmax", "one of embedded_gaussian"),
    ("model.cbam.kernel_size", "4", "odd"),
    ("model.cbam.stages", "[1, 3]", "a list of values, each a stage in 2..5"),
    ("train.batch_size", "0", ">= 1"),
    ("train.mixed_precision", "fp8", "one of auto | none | bf16 | fp16"),
    ("train.accumulation_steps", "0", ">= 1"),
    ("test.num_spatial_crops", "2", "one of 1 | 3"),
    ("test.num_ensemble_views", "0", ">= 1"),
    ("test.aggregation", "mean", "one of softmax | sum | max"),
    ("features.layer", "res6", "one of pool"),
    ("features.dtype", "int8", "one of float32 | float16"),
    ("features.num_spatial_crops", "5", "one of 1 | 3"),
    ("features.batch_size", "0", ">= 1"),
    ("device", "tpu", "one of auto | cpu | cuda"),
]


@pytest.mark.parametrize("key, value, must", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_value_out_of_range_names_file_line_or_override(tmp_path, key, value, must):
    *sections, name = key.split(".")
    lines = (
        ["seed: 1"] + [f"{'  ' * i}{s}:" for i, s in enumerate(sections)] + [f"{'  ' * len(sections)}{name}: {value}"]
    )
    path = _write(tmp_path, "bad.yaml", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:{len(lines)}: {key}=") and f"must be {must}" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value}"])
    assert str(e.value).startswith(f"override '{key}={value}': {key}=") and f"must be {must}" in str(e.value)


def test_value_message_exactly_and_where_the_final_value_came_from(tmp_path):
    base = _write(tmp_path, "base.yaml", "data:\n  root: x\n  num_frames: 0\n")
    child = _write(tmp_path, "child.yaml", "_base_: base.yaml\nsolver:\n  base_lr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert str(e.value) == f"{base}:3: data.num_frames=0 must be >= 1"  # the line that set it
    assert load_config(child, ["data.num_frames=4"]).data.num_frames == 4  # an override repairs it
    with pytest.raises(
        ConfigError,
        match=r"^override 'data.train_jitter_scales=\[320,256\]': "
        r"data.train_jitter_scales=\[320, 256\] must be \[min, max\]",
    ):
        load_config(None, ["data.train_jitter_scales=[320,256]"])


def test_base_cycle_is_one_line_naming_the_cycle(tmp_path):
    _write(tmp_path, "a.yaml", "_base_: b.yaml\ndata:\n  num_frames: 4\n")
    _write(tmp_path, "b.yaml", "_base_: [c.yaml]\n")
    _write(tmp_path, "c.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "a.yaml"))
    assert "_base_ cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml" in str(e.value) and "\n" not in str(e.value)
    self_loop = _write(tmp_path, "self.yaml", "_base_: self.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle: self.yaml -> self.yaml"):
        load_config(self_loop)
    _write(tmp_path, "d.yaml", "_base_: [c2.yaml, c2.yaml]\n")  # the same base twice: no cycle
    _write(tmp_path, "c2.yaml", "data:\n  num_frames: 6\n")
    assert load_config(str(tmp_path / "d.yaml")).data.num_frames == 6


@pytest.mark.slow
@pytest.mark.parametrize(
    "config_text, opts, message",
    [
        ("_base_: loop.yaml\n", [], "_base_ cycle: loop.yaml -> loop.yaml"),
        ("model:\n  preset: I3D_NL_R5\n", [], "unknown model.preset 'I3D_NL_R5'; did you mean 'I3D_NL_R50'?"),
        (
            "model:\n  preset: I3D_NL_CBAM_R18\n",
            ["data.sampling_rate=0"],
            "override 'data.sampling_rate=0': data.sampling_rate=0 must be >= 1",
        ),
    ],
)
def test_tool_exits_with_the_one_line(tmp_path, config_text, opts, message):
    import subprocess
    import sys

    path = _write(tmp_path, "loop.yaml", config_text)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config", path, f"output_dir={tmp_path}/out", *opts],
        cwd=repo,
        env=dict(os.environ, PYTHONPATH=repo),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"config error: {path}: {message}" if "cycle" in message else f"config error: {message}"
    ), lines
    assert not os.path.exists(f"{tmp_path}/out")


def _train_net_line(tmp_path, path, opts=()) -> str:
    """Run tools/train_net.py on ``path``; it must exit non-zero with one line and create nothing."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config", path, f"output_dir={tmp_path}/out", *opts],
        cwd=repo,
        env=dict(os.environ, PYTHONPATH=repo),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert not os.path.exists(f"{tmp_path}/out")
    return lines[0]


# ------------------------------------------------------------------------------ non-finite values (issue 19.5)
NON_FINITE = [
    ("solver.base_lr", "inf", "inf"),
    ("solver.base_lr", "1e400", "inf"),
    ("data.mean", "[nan, 0.45, 0.45]", "[nan, 0.45, 0.45]"),
    ("data.std", "[.inf, 0.2, 0.2]", "[inf, 0.2, 0.2]"),
    ("solver.warmup_epochs", ".nan", "nan"),
    ("model.non_local.inter_ratio", "inf", "inf"),
]


@pytest.mark.parametrize("key, value, shown", NON_FINITE, ids=[f"{k}={v}" for k, v, _ in NON_FINITE])
def test_non_finite_values_are_refused_by_the_range_rules(tmp_path, key, value, shown):
    *sections, name = key.split(".")
    lines = (
        ["seed: 1"] + [f"{'  ' * i}{s}:" for i, s in enumerate(sections)] + [f"{'  ' * len(sections)}{name}: {value}"]
    )
    path = _write(tmp_path, "nan.yaml", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:{len(lines)}: {key}={shown} must be finite (no nan or inf)"
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value}"])
    assert str(e.value) == f"override '{key}={value}': {key}={shown} must be finite (no nan or inf)"


@pytest.mark.slow
def test_tool_refuses_non_finite_values_in_one_line(tmp_path):
    path = _write(tmp_path, "nan.yaml", "model:\n  preset: I3D_NL_CBAM_R18\ndata:\n  mean: [nan, 0.45, 0.45]\n")
    assert (
        _train_net_line(tmp_path, path)
        == f"config error: {path}:4: data.mean=[nan, 0.45, 0.45] must be finite (no nan or inf)"
    )
    ok = _write(tmp_path, "ok.yaml", "model:\n  preset: I3D_NL_CBAM_R18\n")
    assert (
        _train_net_line(tmp_path, ok, ["solver.base_lr=1e400"])
        == "config error: override 'solver.base_lr=1e400': solver.base_lr=inf must be finite (no nan or inf)"
    )


# ------------------------------------------------------------------------------ hostile YAML (issue 19.16, 19.17)
# 208 bytes; aliases expand data.mean to 9**6 (531441) numbers: minutes and 1.3 GB in OmegaConf before.
ALIAS_BOMB = (
    "data:\n  mean: [&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
    "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], *f]\n"
)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    path = _write(tmp_path, "bomb.yaml", ALIAS_BOMB)
    assert _train_net_line(tmp_path, path) == (
        f"config error: {path}:2: YAML aliases expand 'data.mean' to more than "
        "10000 values; refusing to expand them (write the values out)"
    )
    value = ALIAS_BOMB.split("mean: ", 1)[1].strip()
    with pytest.raises(ConfigError, match=r"^override 'data.mean': YAML aliases expand 'data.mean' to more than"):
        load_config(None, [f"data.mean={value}"])


def test_small_aliases_still_work(tmp_path):
    path = _write(tmp_path, "alias.yaml", "data:\n  mean: &m [0.5, 0.5, 0.5]\n  std: *m\n")
    cfg = load_config(path)
    assert cfg.data.mean == cfg.data.std == [0.5, 0.5, 0.5]


@pytest.mark.slow
def test_python_tag_is_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "TAG_RAN"
    path = _write(tmp_path, "tag.yaml", f"data:\n  mean: !!python/object/apply:os.system ['touch {marker}']\n")
    line = _train_net_line(tmp_path, path)
    assert (
        line.startswith(f"config error: {path}:2: a YAML tag that a config may not use (plain values only): ")
        and "python/object/apply:os.system" in line
    ), line
    assert not marker.exists()
