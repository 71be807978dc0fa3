"""Search recall and speed per index setting, on real faces and on two kinds of synthetic faces.

    uv run python scripts/bench_search.py --real HOME [--sizes 1000000] [--lists 4096] \
        [--nprobe 256,512] [--data real,old,fitted] [--kinds pq,flat,sq8] [--refine 100] \
        [--dim 128]

HOME is an index home of real photos whose folder names are identities (LFW:
`lfw/<Name>/<Name>_NNNN.jpg`), e.g. `faceidx index --model dlib --home HOME <lfw subset>`.
Data sets:
- `real`: HOME's faces;
- `old`: `make_identities` as scripts/synthetic_home.py draws them for the model (isotropic);
- `fitted`: `indexer.synthetic_fit.make_like`, whose mean and between/within-identity
  covariances are measured on HOME's faces (`--stats-out FILE` keeps them for
  `synthetic_home.py --like FILE`).
First it compares the neighbour structure of the three at HOME's size (share of variance in the
top principal components; a query's 1st and 10th neighbour over the median distance; local
intrinsic dimension, MLE over 20 neighbours) and their recall with the store's own rule for
that size. Then, per size in --sizes, synthetic data at that size: for each IVF kind (`pq`:
4-bit fast-scan codes re-ranked on exact vectors, --refine candidates; `flat`; `sq8`), number
of IVF lists and lists probed, recall@10 against an exact scan and time per query face (one
query at a time, on one thread, as `query` searches), and the build's time. Queries are
held-out faces (new photos of the same population), 200 per set. The index is built and
searched by the store's own code (`build_base`, `FaceIndex`).
`--data real` at a size larger than HOME's stands for real faces at that size as well as this
machine can: HOME's faces are held out as queries and searched among the fitted faces of that
size plus HOME's other faces (recall of real queries in a crowd drawn like them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.models import distance_scale
from indexer.store import Store
from indexer.store.faceindex import REFINED_KINDS, FaceIndex, build_base, ivf_lists
from indexer.synthetic_fit import fit, make_like

QUERIES = 200


def real_faces(home: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """HOME's vectors and identity labels (the photo's folder name), and its model's name."""
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        ids, vectors = store.embeddings()
        faces = {f.face_id: f for f in store.faces(ids.tolist())}
        model = store.model.name
    labels = np.asarray([Path(faces[int(i)].path).parent.name for i in ids])
    return vectors, labels, model


def old_faces(n: int, dim: int, model: str, seed: int) -> np.ndarray:
    from indexer.clustering.synthetic import make_identities

    scale = distance_scale(model)
    return make_identities(n, dim, seed=seed, between_distance=min(0.57 * scale, 1.3),
                           within_distance=min(0.31 * scale, 1.0)).embeddings


def split(vectors: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indexed, queries): QUERIES faces held out at random."""
    rng = np.random.default_rng(seed)
    held = rng.choice(len(vectors), QUERIES, replace=False)
    keep = np.ones(len(vectors), bool)
    keep[held] = False
    return np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(vectors[held])


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = np.concatenate([queries @ base[s:s + 200_000].T
                           for s in range(0, len(base), 200_000)], axis=1)
    return np.argpartition(-sims, k, axis=1)[:, :k]


def structure(base: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """Neighbour structure: variance in the top PCs, 1st and 10th neighbour over the median
    distance, and the local intrinsic dimension (Levina-Bickel MLE over 20 neighbours)."""
    centred = base - base.mean(axis=0)
    values = np.linalg.svd(centred[:20_000], compute_uv=False) ** 2
    share = np.cumsum(values) / values.sum()
    d = np.sqrt(np.maximum(2.0 - 2.0 * (queries @ base.T), 0.0))
    d.sort(axis=1)
    med = np.median(d, axis=1)
    k = 20
    near = np.maximum(d[:, :k], 1e-9)
    lid = -1.0 / np.mean(np.log(near[:, :-1] / near[:, -1:]), axis=1)
    return {"pc10": share[9], "pc32": share[31], "pc64": share[min(63, len(share) - 1)],
            "d1_med": float(np.median(d[:, 0] / med)), "d10_med": float(np.median(d[:, 9] / med)),
            "lid20": float(np.median(lid))}


Row = tuple[int, int, float, float, float]


def sweep(base: np.ndarray, queries: np.ndarray, nlist: int | None, nprobes: list[int],
          kind: str = "flat", refines: tuple[int, ...] = (100,), k: int = 10) -> list[Row]:
    """(nprobe, refine, recall@k, ms per query, CPU ms per query) for each nprobe (and, for
    a kind re-ranked on exact vectors, each number of candidates re-ranked)."""
    dim = base.shape[1]
    ids = np.arange(len(base), dtype=np.int64)
    t0, c0 = time.perf_counter(), time.process_time()
    refined = nlist is not None and kind in REFINED_KINDS
    index = FaceIndex(build_base(ids, base, dim, nlist, kind), ids, dim, 1, ids_sorted=True,
                      vectors=base if refined else None, refine=1)
    print(f"    (built in {time.perf_counter() - t0:.0f} s, {time.process_time() - c0:.0f} s "
          f"CPU)", flush=True)
    truth = exact_top(base, queries, k)
    out = []
    for nprobe in (nprobes if nlist else [0]):
        index.nprobe = nprobe
        if nlist and nprobe > nlist:
            continue
        for refine in (refines if refined else (0,)):
            index.refine = refine
            got = []
            t0, c0 = time.perf_counter(), time.process_time()
            for q in queries:
                got.append(index.search(q[None, :], k)[1][0])
            ms = (time.perf_counter() - t0) / len(queries) * 1000
            cpu = (time.process_time() - c0) / len(queries) * 1000
            recall = float(np.mean([len(set(g.tolist()) & set(t.tolist())) / k
                                    for g, t in zip(got, truth, strict=True)]))
            out.append((nprobe, refine, recall, ms, cpu))
    return out


def report(name: str, n: int, nlist: int | None, rows: list[Row], ivf: str = "flat") -> None:
    for nprobe, refine, recall, ms, cpu in rows:
        kind = f"IVF-{ivf:<4} {nprobe:>4}/{nlist:<5}" if nlist else "exact".ljust(20)
        if refine:
            kind += f" re-rank {refine}"
        print(f"  {name:<7} {n:>9,}  {kind}  recall@10 {recall:.3f}  {ms:7.2f} ms "
              f"({cpu:.2f} CPU)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", type=Path, required=True, help="a home of real, labelled faces")
    ap.add_argument("--sizes", default="1000000")
    ap.add_argument("--lists", default="0", help="IVF lists; 0: the store's rule for the size "
                    "(4096 at 1M)")
    ap.add_argument("--nprobe", default="256,512", help="lists probed (the store's default: "
                    "512)")
    ap.add_argument("--data", default="real,fitted,old",
                    help="sets at --sizes: real (HOME's faces among fitted ones), fitted, old")
    ap.add_argument("--kinds", default="pq", help="IVF vector storage: pq, flat, sq8")
    ap.add_argument("--refine", default="100", help="candidates re-ranked (pq)")
    ap.add_argument("--dim", type=int, default=0, help="0: the real home's dimension")
    ap.add_argument("--stats-out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    nprobes = [int(v) for v in args.nprobe.split(",")]
    refines = tuple(int(v) for v in args.refine.split(","))
    vectors, labels, model = real_faces(args.real)
    stats = fit(vectors, labels)
    if args.stats_out:
        stats.save(args.stats_out)
    dim = args.dim or stats.dim
    print(f"real: {len(vectors)} faces of {stats.identities} identities ({model}, "
          f"{stats.dim}-d) from {args.real}", flush=True)

    def make(kind: str, n: int, seed: int) -> np.ndarray:
        if kind == "old":
            return old_faces(n, dim, model, seed)
        if dim != stats.dim:
            raise SystemExit(f"fitted data needs --dim {stats.dim} (the real home's)")
        return make_like(stats, n, seed=seed).embeddings

    n_real = len(vectors)
    matched = {"real": split(vectors, args.seed)}
    for kind in ("old", "fitted"):
        matched[kind] = split(make(kind, n_real, args.seed), args.seed)
    print(f"\nneighbour structure at {n_real - QUERIES:,} faces (queries held out):")
    for kind, (base, queries) in matched.items():
        s = structure(base, queries)
        print(f"  {kind:<7} variance in top 10/32/64 PCs {s['pc10']:.2f}/{s['pc32']:.2f}/"
              f"{s['pc64']:.2f}; 1st, 10th neighbour / median distance {s['d1_med']:.3f}, "
              f"{s['d10_med']:.3f}; local intrinsic dimension {s['lid20']:.1f}", flush=True)
    nlist = ivf_lists(n_real)
    print(f"\nrecall at {n_real - QUERIES:,} faces, IVF with the store's {nlist} lists:")
    for kind, (base, queries) in matched.items():
        report(kind, len(base), nlist, sweep(base, queries, nlist,
                                             [p for p in (1, 2, 4, 8, 16, 32) if p <= nlist],
                                             "flat"))
    for n in (int(s) for s in args.sizes.split(",") if s):
        for kind in (k for k in args.data.split(",") if k):
            if kind == "real":  # HOME's faces as queries, the rest of them in a fitted crowd
                real_base, queries = matched["real"]
                crowd = make(kind, n - len(real_base), args.seed + 1)
                base = np.ascontiguousarray(np.concatenate([crowd, real_base]))
                del crowd
                print(f"\nreal queries ({len(queries)} of HOME's faces) among {len(real_base)} "
                      f"real and {n - len(real_base):,} fitted faces, {dim}-d:", flush=True)
            else:
                base, queries = split(make(kind, n + QUERIES, args.seed + 1), args.seed)
                print(f"\n{kind} synthetic, {n:,} faces, {dim}-d:", flush=True)
            for ivf in args.kinds.split(","):
                for lists in (int(v) or ivf_lists(n) for v in args.lists.split(",")):
                    report(kind, n, lists, sweep(base, queries, lists, nprobes, ivf, refines),
                           ivf)
            del base
    print(f"\nbench_search: {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
