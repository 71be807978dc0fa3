"""Ingest throughput for each model, measured in one run on one fixed photo mix:

- `faceidx index`: the real pipeline (read, hash, decode, detect, embed, store) on a new home,
  with the model spread over cores as the CLI does;
- the bare model loop: the same model on every core, detecting and embedding photos decoded
  beforehand (no reading, hashing, decoding or store), all handed to it in one call (no batch
  barrier);
- the naive loop: one photo at a time, decoded in full, detection at full resolution.

Beside the wall times, the CPU seconds of `faceidx index` and of the bare loop (this process
and its child processes, the model's workers among them; Linux only): on a loaded machine the
wall ratio moves with the other jobs, the CPU each side spends much less.

`faceidx index` and the bare loop run in --rounds interleaved rounds (each round on a new home,
every other round the bare loop first), since a run of a few seconds moves by 10-25% from one
to the next on a shared machine; each round's figures are printed, and the medians are the
result (the sface / dlib ratio is of the medians). The naive loop runs once.

    uv run python scripts/bench_ingest.py [--faces ../shared/faces] [--models dlib,sface] \
        [--rounds 3]
    uv run python scripts/bench_ingest.py --models sface --workers 2 --model-threads 1

facenet runs only when its weights are on disk (it never downloads here).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ray import cpu_seconds, descendants

from indexer import settings as settings_mod
from indexer.imageio import decode
from indexer.models import create_model
from indexer.models.auto import choose_model
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


def tree_cpu() -> float:
    """CPU seconds used so far by this process and its child processes, the model's workers
    among them (Linux)."""
    return sum(cpu for pid in [os.getpid(), *descendants(os.getpid())]
               if (cpu := cpu_seconds(pid)) is not None)


def bench_model(name: str, settings: settings_mod.Settings, library: Path, work: Path,
                rounds: int) -> dict[str, float]:
    files = sorted(library.iterdir())
    n = len(files)
    model = create_model(name, settings, parallel=True)
    model.load()
    workers = getattr(model, "workers", 1)
    start = getattr(model, "start", None)  # worker processes: started and loaded once per run
    t = time.perf_counter()
    if start is not None:
        start()
    start_s = time.perf_counter() - t

    images = [decode(f, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes)
              for f in files]

    def index_run(r: int) -> tuple[float, float, int]:
        """faceidx index: a new home, the real pipeline."""
        run = replace(settings, home=work / f"home-{name}-{r}")
        cpu = tree_cpu()
        t = time.perf_counter()
        with Store.open(run, model.info) as store, Indexer(store, model, run) as indexer:
            summary = indexer.index([library])
        return time.perf_counter() - t, tree_cpu() - cpu, summary.faces_added

    def bare_run() -> tuple[float, float, int]:
        """The bare loop: pre-decoded photos, the same parallel model, all at once."""
        cpu = tree_cpu()
        t = time.perf_counter()
        found = sum(map(len, model.analyze(images)))
        return time.perf_counter() - t, tree_cpu() - cpu, found

    index_rounds, bare_rounds = [], []
    for r in range(rounds):
        if r % 2:
            bare_rounds.append(bare_run())
            index_rounds.append(index_run(r))
        else:
            index_rounds.append(index_run(r))
            bare_rounds.append(bare_run())
        (i_s, i_cpu, _), (b_s, b_cpu, _) = index_rounds[-1], bare_rounds[-1]
        print(f"  {name} round {r + 1}{' (bare loop first)' if r % 2 else ''}: index "
              f"{n / i_s:.2f} photos/s, bare {n / b_s:.2f}: index / bare {b_s / i_s:.2f}x "
              f"(CPU {b_cpu / i_cpu:.2f}x)", flush=True)
    images.clear()  # the decoded photos are not needed any more
    index_s = statistics.median(x[0] for x in index_rounds)
    index_cpu = statistics.median(x[1] for x in index_rounds)
    faces_added = index_rounds[0][2]
    bare_s = statistics.median(x[0] for x in bare_rounds)
    bare_cpu = statistics.median(x[1] for x in bare_rounds)
    bare_faces = bare_rounds[0][2]
    ratios = sorted(b[0] / i[0] for i, b in zip(index_rounds, bare_rounds, strict=True))
    close = getattr(model, "close", None)
    if close is not None:
        close()

    # the naive loop: one photo at a time, full decode, detection at full resolution
    naive_model = create_model(name, replace(settings, detect_max_side=10**6))
    naive_model.load()
    t = time.perf_counter()
    naive_faces = 0
    for f in files:
        rgb = decode(f, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes)
        naive_faces += len(naive_model.analyze([rgb])[0])
    naive_s = time.perf_counter() - t

    threads = settings.model_threads or (1 if workers > 1 else "default")
    print(f"{name}: {workers} worker process(es), OpenCV threads {threads}"
          + (f"; starting them took {start_s:.1f} s (once per run, before the timings)"
             if start is not None else ""))
    med = f" (medians of {rounds} rounds)" if rounds > 1 else ""
    print(f"  faceidx index: {n / index_s:6.2f} photos/s ({faces_added} faces, "
          f"{index_s:.1f} s){med}")
    print(f"  bare loop:     {n / bare_s:6.2f} photos/s ({bare_faces} faces, {bare_s:.1f} s)")
    print(f"  naive loop:    {n / naive_s:6.2f} photos/s ({naive_faces} faces, {naive_s:.1f} s)")
    print(f"  index / bare: {bare_s / index_s:.2f}x of the medians; per round "
          f"{', '.join(f'{x:.2f}' for x in ratios)}x (median {statistics.median(ratios):.2f}x); "
          f"index / naive: {naive_s / index_s:.2f}x", flush=True)
    print(f"  CPU (this process + workers): index {index_cpu:.1f} s, bare loop {bare_cpu:.1f} s "
          f"(bare / index {bare_cpu / index_cpu:.2f}x)", flush=True)
    return {"index": n / index_s, "bare": n / bare_s, "naive": n / naive_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--models", default="dlib,sface,facenet")
    parser.add_argument("--lfw", type=int, default=60, help="LFW photos in the set")
    parser.add_argument("--workers", type=int, default=None, help="model processes")
    parser.add_argument("--model-threads", type=int, default=None, help="OpenCV threads")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of faceidx index and the bare loop")
    args = parser.parse_args()

    photos = photo_set(args.faces, args.lfw)
    work = Path(tempfile.mkdtemp(prefix="faceidx-bench-"))
    try:
        library = work / "library"
        library.mkdir()
        for i, p in enumerate(photos):
            shutil.copy2(p, library / f"{i:04d}_{p.name}")
        settings = settings_mod.load({"home": work / "home", "workers": args.workers,
                                      "model_threads": args.model_threads, "facenet_probe": ""})
        print(f"{len(photos)} photos ({args.lfw} LFW portraits, group photos, full-size "
              f"photos), batch {settings.batch_size}, detection copy at most "
              f"{settings.detect_max_side} px")
        rates = {}
        for name in args.models.split(","):
            if name == "facenet" and choose_model(settings)[0] != "facenet":
                print("facenet: skipped, its weights are not on this machine")
                continue
            rates[name] = bench_model(name, settings, library, work, args.rounds)
        if "sface" in rates and "dlib" in rates:
            ratio = rates["sface"]["index"] / rates["dlib"]["index"]
            print(f"sface / dlib, faceidx index: {ratio:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
