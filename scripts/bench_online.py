"""Stream an indexed photo set into a new home in random order, as the watch daemon takes it in,
and compare the people formed online with a full recluster of the same faces.

    uv run python scripts/bench_online.py --source /work/homes/lfw-dlib [--seed 0]

The source home's faces (their stored embeddings, so nothing is re-embedded) arrive photo by
photo in a random order, in batches of `--batch` photos. Each batch goes through the daemon's
own path: one transaction that stores the faces and calls the daemon's hook
(`indexer.assign.Assigner.on_faces_added`: assignment to known people with cannot-link, then
`indexer.online.found_people`). With `--recluster-on-growth` the daemon's periodic recluster
also runs whenever `indexer.recluster.recluster_due` says so (the interval is ignored: the
stream has no clock). At the end the online clusters are compared with a full recluster of the
same home: ARI over every face (outliers counted as singletons), the faces that recluster
moved, and, for photos under identity folders (LFW), BCubed F1 of both against the truth.
The last line is `ari=A faces_moved=M faces=N`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from indexer import settings as settings_mod
from indexer.assign import Assigner
from indexer.clustering import score
from indexer.clustering.constraints import violations
from indexer.clustering.metrics import singletons_for_outliers
from indexer.recluster import recluster, recluster_due
from indexer.store import Store
from indexer.types import FaceResult


def _labels(store: Store) -> tuple[np.ndarray, np.ndarray, list[str]]:
    faces = store.faces()
    labels = np.asarray([-1 if f.cluster_id is None else f.cluster_id for f in faces])
    return labels, np.asarray([f.image_id for f in faces]), [f.path for f in faces]


def _truth(paths: list[str], photos: np.ndarray, faces: list, root: str
           ) -> tuple[np.ndarray, list[str]]:
    """Rows of each photo's largest face under an identity folder, and the identity."""
    best: dict[int, tuple[float, int, str]] = {}
    for row, (path, face) in enumerate(zip(paths, faces, strict=True)):
        rel = Path(path).relative_to(root) if path.startswith(root + "/") else None
        if rel is None or len(rel.parts) < 2:
            continue
        x1, y1, x2, y2 = face.bbox
        area = (x2 - x1) * (y2 - y1)
        if photos[row] not in best or area > best[photos[row]][0]:
            best[photos[row]] = (area, row, rel.parts[0])
    chosen = sorted(best.values(), key=lambda t: t[1])
    return np.asarray([c[1] for c in chosen], dtype=np.int64), [c[2] for c in chosen]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="an indexed home")
    ap.add_argument("--root", default=None,
                    help="folder of identity sub-folders for the truth (default: common root)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16, help="photos per batch (batch_size)")
    ap.add_argument("--limit", type=int, default=None, help="stream only this many photos")
    ap.add_argument("--recluster-on-growth", action="store_true")
    ap.add_argument("--home", type=Path, default=None, help="where to build the streamed home")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    src = Store.open(settings_mod.load({"home": args.source}), read_only=True)
    faces = src.faces()
    ids, vectors = src.embeddings()
    model = src.model
    src.close(save=False)
    by_photo: dict[str, list[int]] = {}
    for row, f in enumerate(faces):
        by_photo.setdefault(f.path, []).append(row)
    order = sorted(by_photo)
    np.random.default_rng(args.seed).shuffle(order)
    if args.limit:
        order = order[: args.limit]

    tmp = tempfile.TemporaryDirectory(prefix="bench-online-")
    home = args.home or Path(tmp.name) / "home"
    settings = replace(settings_mod.load({"home": home}), batch_size=args.batch)
    store = Store.open(settings, model)
    assigner = Assigner(store, settings)
    started = time.perf_counter()
    online_seconds = 0.0
    since, at_last, reclusters = 0, 0, 0
    for b in range(0, len(order), args.batch):
        t0 = time.perf_counter()
        with store.transaction() as con:
            new_ids: list[int] = []
            new_vecs: list[np.ndarray] = []
            for path in order[b: b + args.batch]:
                image_id = store.upsert_image(con, path=path, size=0, mtime=0.0,
                                              content_hash=path, status="ok")
                rows = by_photo[path]
                results = [FaceResult(bbox=faces[r].bbox, landmarks=faces[r].landmarks,
                                      score=faces[r].score, embedding=vectors[r]) for r in rows]
                new_ids += store.add_faces(con, image_id, results)
                new_vecs += [vectors[r] for r in rows]
            if new_ids:
                assigner.on_faces_added(con, new_ids, np.stack(new_vecs))
        online_seconds += time.perf_counter() - t0
        since += len(new_ids)
        if args.recluster_on_growth and recluster_due(since, at_last, float("inf"), settings,
                                                      drained=True):
            recluster(store, settings)
            assigner.reload()
            at_last, since, reclusters = at_last + since, 0, reclusters + 1
    online, photos, paths = _labels(store)
    report = recluster(store, settings)
    full, _, _ = _labels(store)
    ari = adjusted_rand_score(singletons_for_outliers(full), singletons_for_outliers(online))
    root = args.root or str(Path(*Path(paths[0]).parts[:-2])) if paths else ""
    stored = store.faces()
    rows, identities = _truth(paths, photos, stored, str(root))
    store.close()
    print(f"photos={len(order)} faces={len(online)} batches={-(-len(order) // args.batch)} "
          f"periodic_reclusters={reclusters} online_seconds={online_seconds:.1f} "
          f"total_seconds={time.perf_counter() - started:.1f}")
    print(f"online: people={len(set(online[online >= 0].tolist()))} "
          f"unassigned={int((online < 0).sum())} "
          f"same_photo_violations={violations(online, photos)}")
    print(f"full recluster: people={report.clusters} unassigned={report.outliers} "
          f"same_photo_violations={violations(full, photos)}")
    if len(rows):
        s_on, s_full = score(identities, online[rows]), score(identities, full[rows])
        print(f"BCubed F1 against the truth ({len(rows)} labelled faces): "
              f"online {s_on.bcubed_f1:.4f}, full recluster {s_full.bcubed_f1:.4f}")
    print(f"ari={ari:.4f} faces_moved={report.faces_moved} faces={len(online)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
