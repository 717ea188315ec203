"""Config loading: schema defaults, presets, _base_ files, overrides, and file:line errors."""
import dataclasses
import textwrap

import pytest
from omegaconf import OmegaConf

from videoattn.config import ConfigError, config_from_dict, config_to_dict, load_config, save_config
from videoattn.config.schema import Config
from videoattn.models.presets import PRESETS


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_defaults_equal_schema_dataclass():
    cfg = load_config()
    assert config_to_dict(cfg) == dataclasses.asdict(Config())


def test_yaml_and_overrides_merge_in_order(tmp_path):
    path = _write(tmp_path, "a.yaml", """
        solver:
          base_lr: 0.2
          max_epoch: 7
        data:
          num_frames: 16
        """)
    cfg = load_config(path, ["solver.base_lr=0.05", "data.train_jitter_scales=[128,160]"])
    assert cfg.solver.base_lr == 0.05          # override beats file
    assert cfg.solver.max_epoch == 7           # file beats default
    assert cfg.data.num_frames == 16
    assert list(cfg.data.train_jitter_scales) == [128, 160]
    assert cfg.data.sampling_rate == Config().data.sampling_rate


def test_preset_fills_model_keys_and_file_wins(tmp_path):
    path = _write(tmp_path, "p.yaml", """
        model:
          preset: I3D_NL_CBAM_R18
          num_classes: 5
          cbam:
            reduction: 2
        """)
    cfg = load_config(path)
    preset = PRESETS["I3D_NL_CBAM_R18"]
    assert cfg.model.depth == preset["depth"]
    assert cfg.model.base_channels == preset["base_channels"]
    assert [list(x) for x in cfg.model.non_local.locations] == preset["non_local"]["locations"]
    assert cfg.model.num_classes == 5
    assert cfg.model.cbam.reduction == 2        # file beats preset
    assert cfg.model.preset == "I3D_NL_CBAM_R18"


def test_base_file_inheritance(tmp_path):
    _write(tmp_path, "base.yaml", """
        data:
          root: /videos
          num_frames: 4
        """)
    child = _write(tmp_path, "child.yaml", """
        _base_: base.yaml
        data:
          num_frames: 6
        """)
    cfg = load_config(child)
    assert cfg.data.root == "/videos" and cfg.data.num_frames == 6


def test_unknown_key_names_file_line_and_nearest(tmp_path):
    path = _write(tmp_path, "typo.yaml", """
        solver:
          base_lr: 0.1
        model:
          depth: 50
          num_clases: 5
        """)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}:6" in msg                 # line of the typo (after the leading blank line)
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
    with pytest.raises(ConfigError, match="did you mean 'I3D_NL_R50'"):
        load_config(None, ["model.preset=I3D_NL_R5"])
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
    cfg = load_config(None, [f"model.preset={name}"])
    assert OmegaConf.select(cfg, "model.depth") == PRESETS[name]["depth"]


def test_shipped_yaml_configs_load():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    paths = sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))
    assert paths, "no YAML configs shipped"
    for path in paths:
        cfg = load_config(path)
        assert cfg.model.preset in PRESETS, path
