"""Recursive file listing that follows folder symlinks but never loops.

Datasets are often assembled with symlinks (a split folder linking to a shared store), so the
walk follows them; a link back to a folder already on the walk (a cycle, or the same folder
reached twice) is skipped by its (device, inode), with one warning naming it.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Sequence, Set, Tuple

log = logging.getLogger(__name__)


def _inode(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def walk_files(root: str, exclude: Sequence[str] = ()) -> Iterator[str]:
    """Paths of the files under ``root`` (folders and files in sorted order), each folder once.

    Follows symlinked folders; one whose (st_dev, st_ino) was already walked is not entered
    again, and the first such link is named in one warning (with the count of others).
    ``exclude``: folders (however reached) whose contents are left out, e.g. an output folder
    that lies inside the folder searched.
    """
    seen: Set[Tuple[int, int]] = set()
    excluded = {key for key in map(_inode, exclude) if key is not None}
    skipped = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in excluded:  # however reached (its own name, a link)
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # a second link to a folder already listed
            skipped.append((folder, os.path.realpath(folder)))
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        keep = []
        for d in sorted(dirs):
            path = os.path.join(folder, d)
            try:
                sd = os.stat(path)
            except OSError:  # a dangling link
                continue
            if (sd.st_dev, sd.st_ino) in seen:
                skipped.append((path, os.path.realpath(path)))
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            yield os.path.join(folder, name)
    if skipped:
        path, target = skipped[0]
        more = f" (and {len(skipped) - 1} more such links)" if len(skipped) > 1 else ""
        log.warning(
            "symlink cycle (or second link to one folder) under %s: %s -> %s is already listed; not followed%s",
            root,
            path,
            target,
            more,
        )
