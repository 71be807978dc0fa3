"""Ingest throughput: `faceidx index` against the same model in a bare loop, and against a naive
one-image-at-a-time loop at full resolution (the way the original notebooks did it).

    uv run python scripts/bench_ingest.py [--faces ../shared/faces] [--model dlib]

All three run in one process on the same fixed photo set, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from indexer import settings as settings_mod
from indexer.imageio import decode
from indexer.models import create_model
from indexer.pipeline import Indexer
from indexer.store import Store

REPO = Path(__file__).resolve().parent.parent


def photo_set(faces: Path, lfw_count: int) -> list[Path]:
    """A fixed mix: LFW portraits, group photos, full-size personal photos."""
    with (faces / "index.csv").open() as fh:
        lfw = sorted(faces / r["file"] for r in csv.DictReader(fh) if r["dataset"] == "lfw")
    full_size = sorted(p for d in ("face_recognition_examples", "openface_examples",
                                   "facenet_pytorch_testimages", "photoprism_album")
                       for p in (faces / d).rglob("*.jp*g"))
    groups = sorted((faces / "group_photos").glob("*.jpg"))
    return lfw[:: max(1, len(lfw) // lfw_count)][:lfw_count] + groups + full_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--model", default="dlib")
    parser.add_argument("--lfw", type=int, default=60, help="LFW photos in the set")
    args = parser.parse_args()

    photos = photo_set(args.faces, args.lfw)
    work = Path(tempfile.mkdtemp(prefix="faceidx-bench-"))
    try:
        library = work / "library"
        library.mkdir()
        for i, p in enumerate(photos):
            shutil.copy2(p, library / f"{i:04d}_{p.name}")
        settings = settings_mod.load({"home": work / "home"})
        model = create_model(args.model, settings)
        model.load()
        print(f"{len(photos)} photos, model {args.model}, batch {settings.batch_size}, "
              f"detect on a copy of at most {settings.detect_max_side} px")

        files = sorted(library.iterdir())
        t0 = time.perf_counter()
        faces_bare = 0
        for f in files:  # (a) the same model, same settings, a bare loop: no store, no hashing
            rgb = decode(f, max_pixels=settings.max_image_pixels,
                         max_bytes=settings.max_file_bytes)
            faces_bare += len(model.analyze([rgb])[0])
        bare = time.perf_counter() - t0

        def run_index(home: str, face_model: object) -> tuple[float, int]:
            run_settings = replace(settings, home=work / home)
            t = time.perf_counter()
            with Store.open(run_settings, model.info) as store, \
                    Indexer(store, face_model, run_settings) as indexer:  # type: ignore[arg-type]
                result = indexer.index([library])
            return time.perf_counter() - t, result.faces_added

        pipeline, faces_pipeline = run_index("home-1", model)  # one process, like the bare loop
        parallel_model = create_model(args.model, settings, parallel=True)
        parallel_model.load()
        parallel, faces_parallel = run_index("home-n", parallel_model)
        workers = getattr(parallel_model, "workers", 1)

        naive_settings = replace(settings, detect_max_side=10**6)
        naive_model = create_model(args.model, naive_settings)
        naive_model.load()
        t0 = time.perf_counter()
        faces_naive = 0
        for f in files:  # (b) one image at a time, detection at full resolution
            rgb = decode(f, max_pixels=settings.max_image_pixels,
                         max_bytes=settings.max_file_bytes)
            faces_naive += len(naive_model.analyze([rgb])[0])
        naive = time.perf_counter() - t0

        n = len(files)
        print(f"faceidx index, {workers} workers: {n / parallel:6.2f} images/s "
              f"({faces_parallel} faces, {parallel:.1f} s)")
        print(f"faceidx index, 1 process: {n / pipeline:6.2f} images/s ({faces_pipeline} faces, "
              f"{pipeline:.1f} s)")
        print(f"bare loop: {n / bare:6.2f} images/s ({faces_bare} faces, {bare:.1f} s)")
        print(f"naive loop: {n / naive:6.2f} images/s ({faces_naive} faces, {naive:.1f} s)")
        print(f"pipeline overhead, 1 process (index time / bare time): {pipeline / bare:.2f}")
        print(f"speed-up of {workers} workers over 1 process: {pipeline / parallel:.2f}")
        print(f"speed-up over the naive loop (naive time / index time): {naive / parallel:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
