"""Load a YAML config over the schema, with file:line errors and nearest-key suggestions.

Order of precedence (later wins): schema defaults < ``_base_`` files < the YAML file <
``key=value`` overrides. The result is the typed :class:`~videoattn.config.schema.Config` dataclass
(OmegaConf checks the types while merging; the value is a plain dataclass afterwards), whose
sections the library's modules take (``cfg.data``, ``cfg.model``, ``cfg.solver``, ...).
``model.preset`` is expanded by the model layer (:func:`videoattn.models.presets.resolve_model_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any, Callable, Iterable, Iterator, List, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videoattn.config.schema import NOT_FINITE, Config, finite
from videoattn.utils.errors import OneLineError
from videoattn.utils.io import atomic_write_text

BASE_KEY = "_base_"
# A config holds a few hundred values; YAML aliases that expand one past this many are refused before
# anything copies them (a 200-byte "billion laughs" file expands to hundreds of millions).
MAX_EXPANDED_VALUES = 10_000


class ConfigError(OneLineError, ValueError):
    """A config file or override names an unknown key, has a wrong type or is malformed."""

    prefix = "config error"


def _fields(dc: Any) -> dict:
    return {f.name: f for f in dataclasses.fields(dc)}


def _child_schema(dc: Any, name: str) -> Optional[Any]:
    """The dataclass type of field ``name`` of ``dc`` if it is a section, else None."""
    default = _fields(dc)[name].default_factory  # type: ignore[misc]
    if default is dataclasses.MISSING:
        return None
    value = default()
    return type(value) if dataclasses.is_dataclass(value) else None


def _unknown_key_message(key: str, parent: str, dc: Any, where: str) -> str:
    valid = list(_fields(dc))
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    full = f"{parent}.{key}" if parent else key
    hint = f"; did you mean '{(parent + '.') if parent else ''}{near[0]}'?" if near else ""
    return f"{where}: unknown config key '{full}'{hint} (valid keys under '{parent or '<root>'}': {', '.join(valid)})"


def _check_node(node: yaml.Node, dc: Any, parent: str, path: str) -> None:
    """Check every key of a YAML mapping node against dataclass ``dc``; raise with file:line."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: '{parent or '<root>'}' must be a mapping")
    for key_node, value_node in node.value:
        key = key_node.value
        where = f"{path}:{key_node.start_mark.line + 1}"
        if not parent and key == BASE_KEY:
            continue
        if key not in _fields(dc):
            raise ConfigError(_unknown_key_message(key, parent, dc, where))
        child = _child_schema(dc, key)
        full = f"{parent}.{key}" if parent else key
        if child is not None:
            if isinstance(value_node, yaml.ScalarNode) and value_node.value in ("", "null", "~"):
                continue
            _check_node(value_node, child, full, path)


def _key_lines(node: yaml.Node, parent: str = "") -> dict:
    """Map every dotted key of a YAML mapping to its 1-based line number."""
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            full = f"{parent}.{key_node.value}" if parent else key_node.value
            lines[full] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, full))
    return lines


def _base_cycle(path: str, chain: tuple) -> Optional[str]:
    """``"a.yaml -> b.yaml -> a.yaml"`` if ``path`` is already on the ``_base_`` chain, else None."""
    real = [os.path.realpath(p) for p in chain]
    if os.path.realpath(path) not in real:
        return None
    loop = list(chain[real.index(os.path.realpath(path)) :]) + [path]
    top = os.path.dirname(os.path.abspath(chain[0]))
    return " -> ".join(os.path.relpath(os.path.abspath(p), top) for p in loop)


def _yaml_error(where: str, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    tag = isinstance(e, yaml.constructor.ConstructorError)  # e.g. !!python/object/apply: never constructed
    kind = "a YAML tag that a config may not use (plain values only)" if tag else "malformed YAML"
    return f"{where}{line}: {kind}: {getattr(e, 'problem', None) or e}"


def _expanded_size(node: yaml.Node, memo: dict) -> int:
    """How many values ``node`` holds once its aliases are expanded (linear time: shared nodes are
    counted once each, memoised by identity)."""
    if id(node) not in memo:
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in children)
    return memo[id(node)]


def _refuse_alias_bomb(node: yaml.Node, where: str, parent: str = "", with_line: bool = True) -> None:
    """Raise if aliases expand ``node`` past :data:`MAX_EXPANDED_VALUES`, naming the deepest key
    (``where``: the file, followed by the key's line if ``with_line``)."""
    memo: dict = {}
    if _expanded_size(node, memo) <= MAX_EXPANDED_VALUES or len(memo) > MAX_EXPANDED_VALUES:
        return  # small, or large without aliases (its text is that large: linear to read)
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if _expanded_size(value_node, memo) > MAX_EXPANDED_VALUES:
                parent = f"{parent}.{key_node.value}" if parent else str(key_node.value)
                line = key_node.start_mark.line + 1
                if isinstance(value_node, yaml.MappingNode):
                    return _refuse_alias_bomb(value_node, where, parent, with_line)
                break
    at = f"{where}:{line}" if with_line else where
    raise ConfigError(
        f"{at}: YAML aliases expand '{parent or '<root>'}' to more than {MAX_EXPANDED_VALUES} values; "
        "refusing to expand them (write the values out)"
    )


def _read_yaml(path: str, chain: tuple = ()) -> tuple[dict, dict]:
    """Parse, check and return (data, key -> line) of one YAML file, following ``_base_``
    (``chain``: the files that named this one, to report a cycle)."""
    cycle = _base_cycle(path, chain)
    if cycle:
        raise ConfigError(f"{chain[-1]}: _base_ cycle: {cycle}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    try:
        node = yaml.compose(text)
        if node is not None:
            _refuse_alias_bomb(node, path)
            _check_node(node, Config, "", path)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:  # malformed, or a tag such as !!python/object/apply (never constructed)
        raise ConfigError(_yaml_error(path, e)) from None
    if node is None:
        return {}, {}
    lines = {k: f"{path}:{v}" for k, v in _key_lines(node).items()}
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data, lines
    merged: dict = {}
    merged_lines: dict = {}
    for rel in [base] if isinstance(base, str) else list(base):
        b_data, b_lines = _read_yaml(os.path.join(os.path.dirname(path), rel), chain + (path,))
        merged = OmegaConf.to_container(OmegaConf.merge(merged, b_data))  # type: ignore[assignment]
        merged_lines.update(b_lines)
    merged = OmegaConf.to_container(OmegaConf.merge(merged, data))  # type: ignore[assignment]
    merged_lines.update(lines)
    return merged, merged_lines


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, value = item.split("=", 1)
    key = key.strip().lstrip("-")
    dc: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        parent = ".".join(parts[:i])
        if dc is None:
            raise ConfigError(f"override '{item}': '{parent}' has no sub-keys")
        if part not in _fields(dc):
            raise ConfigError(_unknown_key_message(part, parent, dc, f"override '{item}'"))
        dc = _child_schema(dc, part)
    try:
        node = yaml.compose(value) if value != "" else None
        if node is not None:
            _refuse_alias_bomb(node, f"override '{key}'", key, with_line=False)
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def _merge(base: DictConfig, update: Any, where_of) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{where_of(key)}: invalid value for '{key}': {str(e).splitlines()[0]}") from None


def _value_rules(dc: Any, parent: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, (ok, must))`` of every field of ``dc`` (and its sections) that declares a rule."""
    for f in dataclasses.fields(dc):
        key = f"{parent}.{f.name}" if parent else f.name
        child = _child_schema(dc, f.name)
        if child is not None:
            yield from _value_rules(child, key)
        elif "check" in f.metadata:
            yield key, f.metadata["check"]


def _check_values(cfg: DictConfig, where_of: Callable[[str], str]) -> None:
    """Apply the schema's value rules (:mod:`videoattn.config.schema`) to the merged config."""
    for key, (ok, must) in _value_rules(Config):
        value = OmegaConf.select(cfg, key)
        plain = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        try:
            good = ok(plain)
        except TypeError:  # e.g. a list of lists where numbers are expected
            good = False
        if not good:
            raise ConfigError(f"{where_of(key)}: {key}={plain} must {must if finite(plain) else NOT_FINITE}")


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Config:
    """Return the merged, type- and range-checked config.

    Args:
        path: a YAML file (may name ``_base_`` files relative to itself), or None for defaults.
        overrides: ``["solver.base_lr=0.01", "data.num_frames=16", ...]``.
    Raises:
        ConfigError: unknown key (with file:line and the nearest valid key), wrong type, a value
            out of its range (file:line or the override), bad YAML, a ``_base_`` cycle.
    """
    overrides = list(overrides)
    data, lines = _read_yaml(path) if path else ({}, {})
    over_cfg = OmegaConf.from_dotlist([])
    for key, value in (_parse_override(o) for o in overrides):
        OmegaConf.update(over_cfg, key, value, force_add=True)
    cfg = _merge(OmegaConf.structured(Config), data, lambda k: lines.get(k, path or "config"))
    cfg = _merge(cfg, over_cfg, lambda k: f"override '{k}'")
    _check_values(cfg, lambda k: _source(k, overrides, lines))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _source(key: str, overrides: List[str], lines: dict) -> str:
    """Where the final value of ``key`` came from: the last override setting it (or a section
    above it), else its file:line."""
    for item in reversed(overrides):
        name = item.split("=", 1)[0].strip().lstrip("-")
        if key == name or key.startswith(name + "."):
            return f"override '{item}'"
    for k in (key, key.rsplit(".", 1)[0]):
        if k in lines:
            return lines[k]
    return "default"


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict of ``cfg`` (what checkpoints store)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict) -> Config:
    """Rebuild a typed config from a plain dict (e.g. the ``config`` stored in a checkpoint)."""
    return OmegaConf.to_object(_merge(OmegaConf.structured(Config), data, lambda k: "checkpoint config"))


def save_config(cfg: Config, path: str) -> None:
    """Write ``cfg`` as YAML (loadable by :func:`load_config`), atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
