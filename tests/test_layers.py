"""The package's folders are layers and imports only go down (read from the source with ast):

    utils  <-  config  <-  data, models (neither imports the other)  <-  engine  <-  evaluation
           <-  train, apps (neither imports the other)                    (<- tools/)
    data  <-  datasets (the offline dataset tooling: prepare, check, synthetic)
    engine  <-  cli (argument parsing and one-line exits, for tools/)
    utils, config, models, train  <-  ablation (runs the tools as processes; train only for the submitit
                                      machinery of train/submit.py)

and no module of the library imports another inside a function (the way to hide an upward
import). Third-party imports inside functions (matplotlib, tensorboard) are allowed.
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "videoattn")
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "utils": set(),
    "config": {"utils"},
    "data": {"utils", "config"},
    "models": {"utils", "config"},
    "datasets": {"utils", "config", "data"},
    "engine": {"utils", "config", "data", "models"},
    "evaluation": {"utils", "config", "data", "models", "engine"},
    "train": {"utils", "config", "data", "models", "engine", "evaluation"},
    "apps": {"utils", "config", "data", "models", "engine", "evaluation"},
    "cli": {"utils", "config", "data", "models", "engine"},
    "ablation": {"utils", "config", "models", "train"},
}


def _layer(module: str):
    """``videoattn.data.loader`` -> ``data``; ``videoattn.cli`` -> ``cli``; others -> None."""
    parts = module.split(".")
    if parts[0] != "videoattn" or len(parts) < 2:
        return None
    return parts[1]


def _modules():
    for folder, _, files in os.walk(ROOT):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield path, rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def imports_of(source: str, module: str):
    """``(line, imported module, inside a function?)`` for every ``videoattn`` import in ``source``."""
    tree = ast.parse(source)
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, in_function) for a in child.names if a.name.startswith("videoattn"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import: resolve against this module's package
                    base = ".".join(module.split(".")[: -child.level] + ([base] if base else []))
                if base == "videoattn":
                    found.extend((child.lineno, f"videoattn.{a.name}", in_function) for a in child.names)
                elif base.startswith("videoattn."):
                    found.append((child.lineno, base, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def violations(source: str, module: str):
    """Upward or sideways imports and function-level imports of ``module`` (a dotted name)."""
    me = _layer(module)
    bad = []
    for line, target, in_function in imports_of(source, module):
        other = _layer(target)
        if in_function:
            bad.append(f"{module}:{line}: imports {target} inside a function")
        elif other and me and other != me and other not in ALLOWED.get(me, set()):
            bad.append(f"{module}:{line}: {me} imports {target} ({other} is not below {me})")
    return bad


def test_every_module_belongs_to_a_layer():
    layers = {_layer(m) for _, m in _modules() if m != "videoattn"}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_imports_only_go_down():
    bad = [v for path, module in _modules() for v in violations(open(path, encoding="utf-8").read(), module)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("videoattn.data.loader", "from videoattn.train.loop import train\n", "data imports videoattn.train.loop"),
        ("videoattn.models.convert", "import videoattn.data.decoding\n", "models imports videoattn.data.decoding"),
        ("videoattn.config.loader", "from videoattn.models import presets\n", "config imports videoattn.models"),
        ("videoattn.utils.io", "from videoattn import config\n", "utils imports videoattn.config"),
        ("videoattn.apps.extract", "def f():\n    from videoattn.cli import parse_config\n", "inside a function"),
        ("videoattn.data.loader", "from ..engine import train\n", "data imports videoattn.engine"),
        ("videoattn.ablation.run", "from videoattn.engine import session\n", "ablation imports videoattn.engine"),
    ],
)
def test_the_check_catches_what_it_must(module, source, expected):
    """The checker itself: each of these would be an upward or hidden import."""
    found = violations(source, module)
    assert len(found) == 1 and expected in found[0], found


def test_downward_imports_pass():
    assert (
        violations(
            "from videoattn.utils.io import atomic_path\nfrom videoattn.config import Config\n", "videoattn.data.loader"
        )
        == []
    )
