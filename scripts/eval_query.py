"""LFW top-1 query accuracy of each model's index, on the same photos, in one run.

    uv run python scripts/eval_query.py --home sface=/work/homes/lfw-sface \
        --home dlib=/work/homes/lfw-dlib [--faces ../shared/faces]

Each home is an index of ../shared/faces/lfw made by `faceidx index` with that model (read
only: it is copied to a temporary folder first). In every LFW photo the labelled person is the
face nearest the centre of the 250x250 crop (others are partial faces at the border). The
photos compared are those where every model found a face. Each such photo whose person has
another such photo is a query: its face's nearest neighbour (cosine, exact) among the labelled
faces of all the other photos; top-1 accuracy is the share of queries whose nearest photo shows
the same person (the person is the LFW folder name).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.store import Store

LFW_CENTRE = 125.0
CHUNK = 1024


def labelled_faces(home: Path, work: Path) -> tuple[str, dict[str, np.ndarray]]:
    """The index's model name, and per LFW photo ("Person/file.jpg") its labelled face vector."""
    copy = work / home.name
    shutil.copytree(home, copy)
    settings = replace(settings_mod.load({"home": copy}, environ={}), home=copy)
    with Store.open(settings, read_only=True) as store:
        model = store.model.name
        faces = store.faces()
        ids, vectors = store.embeddings()
    row = {int(i): k for k, i in enumerate(ids)}
    best: dict[str, tuple[float, int]] = {}
    for face in faces:
        path = Path(face.path)
        if path.parent.parent.name != "lfw":
            continue
        x1, y1, x2, y2 = face.bbox
        off = float(np.hypot((x1 + x2) / 2 - LFW_CENTRE, (y1 + y2) / 2 - LFW_CENTRE))
        key = f"{path.parent.name}/{path.name}"
        if key not in best or off < best[key][0]:
            best[key] = (off, row[face.face_id])
    return model, {key: vectors[r] for key, (_, r) in best.items()}


def top1(vectors: np.ndarray, people: list[str]) -> tuple[float, int]:
    """Top-1 accuracy over the queries (photos whose person has another photo), and their
    number."""
    labels = np.array(people)
    counts = Counter(people)
    queries = np.array([counts[p] > 1 for p in people])
    hits = 0
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, len(unit), CHUNK):
        sims = unit[start:start + CHUNK] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # not the photo itself
        nearest = sims.argmax(axis=1)
        mine = queries[start:start + CHUNK]
        hits += int((labels[nearest] == labels[start:start + CHUNK])[mine].sum())
    return hits / max(1, int(queries.sum())), int(queries.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", action="append", required=True, metavar="NAME=PATH",
                        help="a model's LFW index (repeat for each model)")
    parser.add_argument("--faces", type=Path, default=Path(__file__).resolve().parent.parent
                        .parent / "shared" / "faces")
    args = parser.parse_args()

    lfw = args.faces / "lfw"
    photos = sorted(f"{p.parent.name}/{p.name}" for p in lfw.glob("*/*.jpg"))
    work = Path(tempfile.mkdtemp(prefix="faceidx-evalq-"))
    try:
        found: dict[str, dict[str, np.ndarray]] = {}
        for spec in args.home:
            name, _, path = spec.partition("=")
            model, faces = labelled_faces(Path(path).expanduser(), work)
            if model != name:
                raise SystemExit(f"{path}: an index made by {model}, not {name}")
            found[name] = faces
    finally:
        shutil.rmtree(work, ignore_errors=True)

    common = [p for p in photos if all(p in faces for faces in found.values())]
    people = [p.split("/")[0] for p in common]
    print(f"{len(photos)} LFW photos ({len(set(p.split('/')[0] for p in photos))} people) in "
          f"{lfw}; a face found in {len(common)} by every model")
    print("| model | photos with a face | top-1 query accuracy (same photos) | queries |")
    print("|---|---|---|---|")
    for name, faces in found.items():
        accuracy, queries = top1(np.stack([faces[p] for p in common]), people)
        print(f"| {name} | {len(faces)}/{len(photos)} | {accuracy:.4f} | {queries} |")


if __name__ == "__main__":
    main()
