"""Configuration: typed schema (``schema.py``) and YAML loading with overrides (``loader.py``)."""

from videoattn.config.loader import ConfigError, config_from_dict, config_to_dict, load_config, save_config
from videoattn.config.schema import (
    BNConfig,
    Config,
    DataConfig,
    FeaturesConfig,
    ModelConfig,
    SolverConfig,
    TestConfig,
    TrainConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "save_config",
    "config_to_dict",
    "config_from_dict",
    "DataConfig",
    "ModelConfig",
    "SolverConfig",
    "BNConfig",
    "TrainConfig",
    "TestConfig",
    "FeaturesConfig",
]
