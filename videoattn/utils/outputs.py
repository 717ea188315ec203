"""Which files of a folder a tool wrote: a tool never replaces a file it did not create.

Every tool that writes into a folder or a file the user names (predict, extract_features, test_net,
visualize_attention, convert_checkpoint) calls :func:`claim_outputs` (:func:`claim_files` for single
files) before its first write there, with every name it may write. A name that exists already must
be listed for that very tool in the folder's ``.videoattn-outputs.json`` (an earlier run of the tool
wrote it); otherwise :class:`OutputError` names the file in one line and nothing is written. The
claimed names are then listed (before they are written, so that the rerun of a killed run owns what
it left) and entries whose files are gone are dropped (a file the user later puts under such a name
is the user's).

A folder that is empty, or holds only files of other names, can thus be written into; a user's
``portrait.mp4`` next to it is refused, not replaced. The list is replaced atomically; two tools
claiming in one folder at the same instant may lose an entry, which makes a later run refuse (never
replace) that file. :func:`check_not_input` refuses an output that is an input file (the same file
through a symlink or a hard link too).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List, Sequence

from videoattn.utils.errors import OneLineError
from videoattn.utils.io import atomic_write_json

MANIFEST = ".videoattn-outputs.json"


class OutputError(OneLineError):
    """An output would replace a file the tool did not create, or an input; one-line message."""


def read_manifest(folder: str) -> Dict[str, str]:
    """``{name: tool}`` of the files listed in ``folder``'s :data:`MANIFEST` ({} if there is none)."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError):
        data = None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise OutputError(
            f"{path} is not a videoattn list of outputs; not replaced: move it away or choose another output"
        )
    return dict(files)


def _refusal(path: str, tool: str, owner: str, hint: str) -> OutputError:
    who = f"was written by {owner}, not by {tool}" if owner else f"exists and was not written by {tool}"
    return OutputError(f"{path} {who}; not replaced: move it away or {hint}")


def _check(folder: str, tool: str, names: Sequence[str], hint: str) -> Dict[str, str]:
    """Raise :class:`OutputError` for the first of ``names`` that ``tool`` may not write; else the list."""
    owned = read_manifest(folder)
    for name in names:
        path = os.path.join(folder, name)
        if name == MANIFEST or name == os.pardir or name.startswith(os.pardir + os.sep) or os.path.isabs(name):
            raise OutputError(f"{tool} cannot write {path}: a name outside the folder or of its list of outputs")
        if os.path.lexists(path) and owned.get(name) != tool:
            raise _refusal(path, tool, owned.get(name, ""), hint)
    return owned


def _record(folder: str, tool: str, names: Sequence[str], owned: Dict[str, str]) -> None:
    kept = {n: t for n, t in owned.items() if os.path.lexists(os.path.join(folder, n))}
    kept.update(dict.fromkeys(names, tool))
    if kept != owned:
        atomic_write_json(os.path.join(folder, MANIFEST), {"files": dict(sorted(kept.items()))})


def claim_outputs(folder: str, tool: str, names: Iterable[str], hint: str = "choose another output") -> None:
    """Let ``tool`` write ``names`` (paths relative to ``folder``) into ``folder``, or raise
    :class:`OutputError` naming the first that exists and is not ``tool``'s (see the module doc).
    ``hint``: what the user can do instead ("use another --output")."""
    folder = os.path.abspath(folder)
    names = list(dict.fromkeys(os.path.normpath(n) for n in names))
    _record(folder, tool, names, _check(folder, tool, names, hint))


def claim_files(tool: str, paths: Dict[str, str]) -> None:
    """:func:`claim_outputs` for single files ``{path: hint}``: all are checked before any is listed."""
    groups: Dict[str, List[str]] = {}
    for path, hint in paths.items():
        folder, name = os.path.split(os.path.abspath(path))
        _check(folder, tool, [name], hint)
        groups.setdefault(folder, []).append(name)
    for folder, names in groups.items():
        _record(folder, tool, names, read_manifest(folder))


def check_not_input(output: str, inputs: Sequence[str], flag: str = "--output") -> None:
    """Raise :class:`OutputError` if ``output`` exists and is one of ``inputs`` (``os.path.samefile``:
    the same path, a symlink to it or a hard link of it)."""
    for source in inputs:
        try:
            same = os.path.samefile(output, source)
        except OSError:  # one of them does not exist (or cannot be looked at): not the same file
            continue
        if same:
            raise OutputError(f"{flag} {output} is the input file {source}; not replaced: choose another {flag}")
