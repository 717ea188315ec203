"""Data files shipped inside the package (``videoattn/resources/``).

``kinetics400_classes.txt``: the 400 Kinetics-400 class names, one per line, in label-index order
(alphabetical: the order of the official CSVs' sorted labels, as PySlowFast and pytorchvideo
number them). Source: mmaction2 ``tools/data/kinetics/label_map_k400.txt`` (commit 4d6c934).
"""

from __future__ import annotations

from importlib.resources import files
from typing import List


def read_resource_lines(name: str) -> List[str]:
    """Non-empty lines of ``videoattn/resources/<name>``."""
    text = (files("videoattn") / "resources" / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def kinetics400_classes() -> List[str]:
    """The 400 Kinetics-400 class names in label-index order."""
    return read_resource_lines("kinetics400_classes.txt")
