"""The output folder: refuse one in use, or with --force replace only what an export wrote.

Export records the top-level names it is about to write in a manifest before writing them,
so a later `--force` removes exactly those (and the fixed file names), never a user's files.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..errors import FaceidxError

log = logging.getLogger(__name__)

MANIFEST = ".faceidx-export.json"
FIXED = ("clusters.csv", "outliers.csv", "faces.csv", "people.csv", "metrics.json",
         "viz_3d.png", "viz_tsne.png", "cluster_sizes.png", "condensed_tree.png", "crops",
         "outliers")


def _safe(name: str) -> bool:
    return bool(name) and name not in (".", "..") and Path(name).name == name


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def previous_entries(out: Path) -> set[str]:
    try:
        names = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and _safe(n)}


def prepare(out: Path, planned: Iterable[str], *, force: bool) -> None:
    """Make `out` ready for the `planned` top-level entries, and record them."""
    planned = sorted(set(planned))
    if out.exists() and not out.is_dir():
        raise FaceidxError(f"{out} exists and is not a folder; choose a folder for the export")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FaceidxError(f"{out} is not empty; choose an empty or new folder, or add "
                               "--force to replace what an earlier export wrote there")
        ours = previous_entries(out) | set(FIXED) | {MANIFEST}
        for name in sorted(ours):
            _remove(out / name)
        clash = [n for n in planned if (out / n).exists() or (out / n).is_symlink()]
        if clash:
            raise FaceidxError(f"{out / clash[0]} was not written by faceidx export; move it "
                               "away or export into another folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({"entries": [*planned, MANIFEST]}, indent=1) + "\n",
                                encoding="utf-8")
