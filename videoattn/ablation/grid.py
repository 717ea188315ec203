"""An ablation grid file: variants (named sets of config overrides) x seeds, read with OmegaConf.

    base_config: ../synthetic/I3D_NL_CBAM_R18.yaml    # relative to the grid file
    overrides: [solver.max_epoch=30]                 # every cell (key=value, as tools/train_net.py takes)
    seeds: [0, 1, 2]                                 # default seeds of every variant
    nproc: 1                                         # processes per cell (torchrun --nproc_per_node)
    baseline: plain                                  # the variant the others are compared with
    comparisons: ["cbam - plain"]                    # more paired differences for summary.md (optional)
    variants:
      plain: {overrides: [model.cbam.stages=[]], seeds: [0, 1, 2, 3, 4]}   # its own seeds
      cbam: {overrides: []}

A cell is one (variant, seed): its overrides are ``overrides + variant.overrides + [seed=k]``; the
runner adds ``output_dir=<out>/<variant>/seed<k>``. :func:`load_grid` checks the file's shape;
:func:`load_cell_configs` loads every cell's config through the config schema before anything runs.
Every problem is one :class:`GridError` line naming the grid file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videoattn.config import Config, ConfigError, load_config
from videoattn.utils.errors import UsageError

GRID_KEYS = ("base_config", "overrides", "seeds", "nproc", "baseline", "variants", "comparisons")
VARIANT_KEYS = ("overrides", "seeds")
RUNNER_KEYS = ("seed", "output_dir")  # set per cell by the runner, never by the grid
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a variant name is a folder name


class GridError(UsageError):
    """A grid file that cannot be run; one line naming the file."""

    prefix = "grid error"


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: Tuple[str, ...]
    seeds: Tuple[int, ...]


@dataclass(frozen=True)
class Cell:
    """One run: ``variant`` trained with ``seed``; ``overrides`` = the grid's, the variant's, ``seed=k``."""

    variant: str
    seed: int
    overrides: Tuple[str, ...]

    def folder(self, out: str) -> str:
        return os.path.join(out, self.variant, f"seed{self.seed}")

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"


@dataclass(frozen=True)
class Comparison:
    """``left - right``: a paired difference summary.md reports besides each variant's from the baseline."""

    left: str
    right: str

    @property
    def name(self) -> str:
        return f"{self.left} - {self.right}"


@dataclass(frozen=True)
class Grid:
    path: str  # the grid file
    base_config: str  # absolute
    overrides: Tuple[str, ...]
    seeds: Tuple[int, ...]
    nproc: int
    baseline: str
    variants: Tuple[Variant, ...]
    comparisons: Tuple[Comparison, ...] = ()

    def cells(self) -> List[Cell]:
        """Every cell, variant by variant (file order), seeds in their order."""
        return [Cell(v.name, s, self.overrides + v.overrides + (f"seed={s}",)) for v in self.variants for s in v.seeds]

    def run_order(self) -> List[Cell]:
        """The cells in rounds: every variant's first seed, then every variant's second, and so on.
        A grid stopped part-way (a session's end, a preemption) then leaves all variants with the same
        number of finished seeds, which a comparison can use, rather than some variants done and
        others not started."""
        cells = self.cells()
        rank = {c: [v for v in self.variants if v.name == c.variant][0].seeds.index(c.seed) for c in cells}
        return sorted(cells, key=lambda c: rank[c])  # sorted() is stable: file order within a round

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


def _read(path: str) -> DictConfig:
    if not os.path.isfile(path):
        raise GridError(f"grid file not found: {path}")
    try:
        data = OmegaConf.load(path)
        if not isinstance(data, DictConfig):
            raise GridError(f"{path}: a grid file is a mapping with keys {', '.join(GRID_KEYS)}")
        OmegaConf.resolve(data)  # ${...} interpolations, e.g. shared override lists
        return data
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or e
        raise GridError(f"{at}: malformed YAML: {problem} (quote an override with [ ] or : )") from None
    except OmegaConfBaseException as e:
        raise GridError(f"{path}: cannot read the grid: {str(e).splitlines()[0]}") from None


def _keys(where: str, data: Any, allowed: Tuple[str, ...]) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise GridError(f"{where} must be a mapping with keys {', '.join(allowed)}")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise GridError(f"{where}: unknown key '{unknown[0]}' (valid keys: {', '.join(allowed)})")
    return data


def _overrides(where: str, value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(o, str) and "=" in o for o in value):
        raise GridError(f"{where}: overrides must be a list of key=value strings, got {value!r}")
    for o in value:
        if o.split("=", 1)[0].strip().lstrip("-") in RUNNER_KEYS:
            raise GridError(f"{where}: override '{o}': the runner sets {' and '.join(RUNNER_KEYS)} per cell")
    return tuple(value)


def _seeds(where: str, value: Any) -> Tuple[int, ...]:
    ok = isinstance(value, list) and value and all(type(s) is int and s >= 0 for s in value)
    if not ok or len(set(value)) != len(value):
        raise GridError(f"{where}: seeds must be a non-empty list of distinct integers >= 0, got {value!r}")
    return tuple(value)


def load_grid(path: str) -> Grid:
    """Read and check ``path`` (see the module doc); :class:`GridError` on the first problem."""
    data = _keys(path, OmegaConf.to_container(_read(path)), GRID_KEYS)
    for key in ("base_config", "variants"):
        if key not in data:
            raise GridError(f"{path}: '{key}' is required")
    base = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), str(data["base_config"])))
    if not os.path.isfile(base):
        raise GridError(f"{path}: base_config {data['base_config']} not found (looked for {base})")
    seeds = _seeds(f"{path}: seeds", data.get("seeds", [0, 1, 2]))
    nproc = data.get("nproc", 1)
    if type(nproc) is not int or nproc < 1:
        raise GridError(f"{path}: nproc must be an integer >= 1, got {nproc!r}")
    variants = []
    specs = data["variants"]
    if not isinstance(specs, dict) or not specs:
        raise GridError(f"{path}: variants must be a non-empty mapping: name -> {{overrides, seeds}}")
    for name, spec in specs.items():
        where = f"{path}: variant '{name}'"
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise GridError(f"{where}: a variant name is a folder name (letters, digits, _ . + -)")
        spec = _keys(where, {} if spec is None else spec, VARIANT_KEYS)
        vseeds = _seeds(f"{where}: seeds", spec["seeds"]) if "seeds" in spec else seeds
        variants.append(Variant(name, _overrides(where, spec.get("overrides")), vseeds))
    baseline = data.get("baseline", variants[0].name)
    if baseline not in [v.name for v in variants]:
        raise GridError(f"{path}: baseline '{baseline}' is not a variant ({', '.join(v.name for v in variants)})")
    return Grid(
        os.path.abspath(path),
        base,
        _overrides(f"{path}: overrides", data.get("overrides")),
        seeds,
        nproc,
        baseline,
        tuple(variants),
        _comparisons(path, data.get("comparisons", []), [v.name for v in variants]),
    )


def _comparisons(path: str, value: Any, names: List[str]) -> Tuple[Comparison, ...]:
    """``["a - b", ...]``: each side a variant of the grid, the two different."""
    if not isinstance(value, list):
        raise GridError(f"{path}: comparisons must be a list of 'variant - variant' strings")
    out = []
    for item in value:
        parts = [p.strip() for p in item.split(" - ")] if isinstance(item, str) else []
        if len(parts) != 2 or parts[0] == parts[1] or not all(p in names for p in parts):
            known = ", ".join(names)
            raise GridError(f"{path}: comparison {item!r} is not 'variant - variant' of two variants ({known})")
        out.append(Comparison(*parts))
    return tuple(out)


def load_cell_configs(grid: Grid, out: str) -> Dict[Cell, Config]:
    """Every cell's config, loaded (and checked) the way train_net will load it; :class:`GridError`
    naming the variant for the first cell the schema refuses. Nothing runs before this passes."""
    configs = {}
    for cell in grid.cells():
        try:
            configs[cell] = load_config(grid.base_config, [*cell.overrides, f"output_dir={cell.folder(out)}"])
        except ConfigError as e:
            raise GridError(f"{grid.path}: variant '{cell.variant}' (seed {cell.seed}): {e}") from None
    return configs
