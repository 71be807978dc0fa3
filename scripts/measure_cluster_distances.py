"""Sweep the clustering distances of a model on a labelled index (one folder per identity).

    uv run faceidx index --model sface --home /tmp/lfw ../shared/faces/lfw
    uv run python scripts/measure_cluster_distances.py --home /tmp/lfw --root ../shared/faces/lfw

Prints same-person and different-person distance percentiles of the labelled faces, then the
BCubed F1 of each algorithm as its distance threshold(s) move: first every distance of the
model's current defaults times a common factor, then each field of the default recluster
(hdbscan + refinement) alone. `faceidx eval` then reports the chosen defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.clustering import cluster, score
from indexer.evaluate import labelled_faces
from indexer.recluster import default_params
from indexer.store import Store

THRESHOLDS = {"hdbscan": ("split_distance", "merge_distance", "attach_distance"),
              "dbscan": ("dbscan_eps",), "chinese-whispers": ("cw_threshold",),
              "agglomerative": ("agglomerative_threshold",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--factors", default="0.8,0.9,1.0,1.1,1.2")
    parser.add_argument("--algorithms", default="hdbscan,chinese-whispers,agglomerative,dbscan")
    args = parser.parse_args()

    with Store.open(settings_mod.load({"home": args.home}), read_only=True) as store:
        rows, identities = labelled_faces(store, args.root.resolve())
        _, vectors = store.embeddings()
        model = store.model.name
    base = default_params(model)
    x = vectors[rows].astype(np.float64)
    names = np.asarray(identities)
    d = np.sqrt(np.clip(2 - 2 * x @ x.T, 0, None))
    same = names[:, None] == names[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    s, o = d[same & upper], d[~same & upper]
    print(f"{model}: {len(rows)} labelled faces, {len(set(identities))} people, "
          f"{len(vectors)} faces clustered")
    print(f"same person: median {np.median(s):.3f}, p95 {np.percentile(s, 95):.3f}; "
          f"different: p1 {np.percentile(o, 1):.3f}, p0.1 {np.percentile(o, 0.1):.3f}, "
          f"median {np.median(o):.3f}")

    def bcubed(algorithm: str, params: object) -> float:
        result = cluster(vectors, algorithm, params)  # type: ignore[arg-type]
        return score(identities, result.labels[rows]).bcubed_f1

    for algorithm in args.algorithms.split(","):
        fields = THRESHOLDS[algorithm]
        print(f"{algorithm}: " + ", ".join(f"{f} {getattr(base, f):.3f}" for f in fields))
        for factor in map(float, args.factors.split(",")):
            params = replace(base, **{f: getattr(base, f) * factor for f in fields})
            print(f"  all x{factor:.2f}: BCubed F1 {bcubed(algorithm, params):.4f}", flush=True)
        if algorithm == "hdbscan":
            for f in fields:
                for factor in map(float, args.factors.split(",")):
                    params = replace(base, **{f: getattr(base, f) * factor})
                    print(f"  {f} {getattr(params, f):.3f}: BCubed F1 "
                          f"{bcubed(algorithm, params):.4f}", flush=True)


if __name__ == "__main__":
    main()
