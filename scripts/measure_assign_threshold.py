"""Measure the online-assignment threshold on a labelled index (one folder per identity).

    uv run faceidx index --model dlib --home /tmp/lfw ../shared/faces/lfw
    uv run python scripts/measure_assign_threshold.py --home /tmp/lfw --root ../shared/faces/lfw
    (sface: --thresholds 0.70,1.10,0.04)

For every identity with at least --min-faces labelled faces, each face in turn is held out;
its distance to its own identity's centroid (of the others) is a "same" distance, and its
distance to the nearest centroid of another identity a "different" one. For each threshold
the script reports how often a held-out face would be assigned to the right identity, to a
wrong one, or left unassigned (nearest-centroid rule, as indexer.assign does).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.evaluate import labelled_faces
from indexer.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--min-faces", type=int, default=4)
    parser.add_argument("--thresholds", default="0.26,0.42,0.02",
                        help="start,stop,step of the thresholds tried (sface: 0.70,1.10,0.04)")
    args = parser.parse_args()

    with Store.open(settings_mod.load({"home": args.home}), read_only=True) as store:
        rows, identities = labelled_faces(store, args.root)
        _, vectors = store.embeddings()
    x = vectors[rows].astype(np.float64)
    names = np.asarray(identities)
    groups = {n: np.flatnonzero(names == n) for n in np.unique(names)}
    groups = {n: g for n, g in groups.items() if len(g) >= args.min_faces}
    order = sorted(groups)
    sums = np.stack([x[groups[n]].sum(axis=0) for n in order])
    sizes = np.asarray([len(groups[n]) for n in order], dtype=np.float64)
    same, nearest_other, correct_nearest = [], [], []
    for j, n in enumerate(order):
        for i in groups[n]:
            cents = sums.copy()
            cents[j] -= x[i]
            counts = sizes.copy()
            counts[j] -= 1
            cents /= counts[:, None]
            cents /= np.linalg.norm(cents, axis=1, keepdims=True)
            d = np.sqrt(np.clip(2 - 2 * cents @ x[i], 0, None))
            same.append(d[j])
            other = np.delete(d, j)
            nearest_other.append(other.min())
            correct_nearest.append(d[j] < other.min())
    same_a, other_a, ok = map(np.asarray, (same, nearest_other, correct_nearest))
    print(f"{len(order)} identities with >= {args.min_faces} faces, {len(same_a)} held-out faces")
    print(f"distance to own centroid: median {np.median(same_a):.3f}, "
          f"p95 {np.percentile(same_a, 95):.3f}")
    print(f"distance to nearest other centroid: median {np.median(other_a):.3f}, "
          f"p5 {np.percentile(other_a, 5):.3f}")
    # A known face: assigned right, wrong, or left for the recluster. A stranger (its own
    # identity has no cluster): its nearest centroid is another identity's, so assigning it
    # at all is wrong.
    print("threshold  known: right  wrong  waits   stranger: wrongly assigned")
    nearest = np.minimum(same_a, other_a)
    start, stop, step = map(float, args.thresholds.split(","))
    for t in np.arange(start, stop + step / 2, step):
        assigned = nearest <= t
        right = (assigned & ok).mean()
        wrong = (assigned & ~ok).mean()
        stranger = (other_a <= t).mean()
        print(f"  {t:.2f}          {right:6.3f} {wrong:6.3f} {1 - assigned.mean():6.3f}"
              f"             {stranger:6.3f}")


if __name__ == "__main__":
    main()
