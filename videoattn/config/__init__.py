"""Configuration: typed schema (``schema.py``) and YAML loading with overrides (``loader.py``)."""
from videoattn.config.loader import (ConfigError, config_from_dict, config_to_dict, load_config,
                                     save_config)
from videoattn.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config", "save_config", "config_to_dict", "config_from_dict"]
