"""Build an index home of N synthetic faces with identity structure.

    uv run python scripts/synthetic_home.py --faces 100000 --model dlib --home /tmp/syn100k

Faces go in through the store's real write path (bulk inserts, as indexing writes them); photo
paths are `synthetic://...`, so `index` and `watch` never mistake them for files. Clusters are
the true identities by default (`--clusters recluster` runs the real recluster instead). Every
faceidx command works on the result, e.g. `faceidx status --home ...`. The last line is exactly
`faces=N images=M write_faces_per_s=R seconds=S`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from indexer import settings as settings_mod
from indexer.synthetic_fit import EmbeddingStats
from indexer.synthetic_home import CLUSTER_CHOICES, build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--faces", type=int, required=True)
    ap.add_argument("--model", default="dlib", help="dlib, sface or facenet (sets the "
                    "dimension and the distance scale, and is recorded as the home's model)")
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clusters", choices=CLUSTER_CHOICES, default="truth")
    ap.add_argument("--named", type=int, default=10, help="name this many largest clusters")
    ap.add_argument("--like", type=Path, default=None, metavar="STATS",
                    help="draw faces from statistics measured on real faces (a file from "
                    "scripts/bench_search.py --stats-out) instead of isotropic identities")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = settings_mod.load({"home": args.home.expanduser().resolve()})
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 10 or done == total:
            last[0] = time.monotonic()
            print(f"synthetic_home: {done}/{total} faces written", file=sys.stderr)

    start = time.perf_counter()
    report = build(settings, args.faces, args.model, seed=args.seed, clusters=args.clusters,
                   named=args.named, progress=progress,
                   like=None if args.like is None else EmbeddingStats.load(args.like))
    seconds = time.perf_counter() - start
    print(f"home {settings.home}: {report.faces} faces in {report.images} photos, "
          f"{report.identities} identities, {report.clusters} clusters")
    print(f"store writes {report.write_seconds} s ({report.faces_per_second} faces/s), "
          f"search index {report.index_seconds} s, clusters {report.cluster_seconds} s")
    print(f"faces={report.faces} images={report.images} "
          f"write_faces_per_s={report.faces_per_second} seconds={seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
