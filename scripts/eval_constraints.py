"""Score every algorithm with and without the cannot-link constraint on an indexed home.

    uv run python scripts/eval_constraints.py --home /work/homes/lfw-dlib --root ../shared/faces/lfw

Reads the home as it is (nothing is indexed or written), so it also works on a copy of a home
being indexed. For each algorithm: BCubed F1 of each photo's largest face against its identity
folder (as `faceidx eval`), with the constraint and without, and the faces sharing a person with
another face of their photo in each run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.clustering import ALGORITHMS, cluster, score
from indexer.clustering.constraints import violations
from indexer.evaluate import labelled_faces
from indexer.recluster import default_params
from indexer.store import Store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--root", type=Path, required=True, help="one folder per identity")
    ap.add_argument("--algorithm", action="append", choices=ALGORITHMS)
    args = ap.parse_args(argv)
    with Store.open(settings_mod.load({"home": args.home}), read_only=True) as store:
        faces = store.faces()
        ids, vectors = store.embeddings()
        rows, identities = labelled_faces(store, args.root, faces)
        params = default_params(store.model.name)
    photos = np.asarray([f.image_id for f in faces], dtype=np.int64)
    print(f"{len(ids)} faces, {len(rows)} labelled, {len(set(identities))} identities, "
          f"{len(set(photos.tolist()))} photos")
    print(f"{'algorithm':<17} {'BCubed F1':>9} {'(without)':>9} {'same-photo':>10} "
          f"{'(without)':>9} {'pairwise F1':>11} {'(without)':>9}")
    for name in args.algorithm or ALGORITHMS:
        free = cluster(vectors, name, params)
        held = cluster(vectors, name, params, groups=photos)
        s_free, s_held = score(identities, free.labels[rows]), score(identities, held.labels[rows])
        print(f"{name:<17} {s_held.bcubed_f1:>9.4f} {s_free.bcubed_f1:>9.4f} "
              f"{violations(held.labels, photos):>10} {violations(free.labels, photos):>9} "
              f"{s_held.pairwise_f1:>11.4f} {s_free.pairwise_f1:>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
