"""How long after a photo's copy finishes are its faces searchable, beside the model's own time?

Runs the watch daemon (in this process, on a thread) on an empty temporary folder, copies photos
into it one at a time, and polls the catalog for each (a committed face is searchable: readers
repair their FAISS copy from the catalog). Then times the model alone on each photo (decode +
detect + embed) and prints median and p95 of both and their ratio (the daemon's overhead:
settling, debouncing, batching, storing, assigning).

    uv run python scripts/bench_watch.py --photos 40 --interval 0.5
    uv run python scripts/bench_watch.py --photos 40 --interval 0.5 --settle 0.3
    uv run python scripts/bench_watch.py --model dlib
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indexer import settings as settings_mod  # noqa: E402
from indexer.imageio import decode  # noqa: E402
from indexer.models import create_model  # noqa: E402
from indexer.store import Store  # noqa: E402
from indexer.watch import WatchDaemon  # noqa: E402

POLL = 0.02


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--glob", default="lfw/*/*_0002.jpg",
                        help="photos to copy, relative to --faces (sorted, first --photos)")
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between arrivals (0: all at once)")
    parser.add_argument("--model", default="sface")
    parser.add_argument("--settle", type=float, default=None,
                        help="override settings.watch_settle (default: the setting)")
    parser.add_argument("--debounce", type=float, default=None,
                        help="override settings.watch_debounce (default: the setting)")
    args = parser.parse_args()

    photos = sorted(args.faces.glob(args.glob))[:args.photos]
    if len(photos) < args.photos:
        sys.exit(f"only {len(photos)} photos match {args.faces / args.glob}")
    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    folder, home = work / "watched", work / "home"
    folder.mkdir()
    settings = settings_mod.load({"home": home, "watch_settle": args.settle,
                                  "watch_debounce": args.debounce,
                                  "recluster_every": 0, "recluster_interval": 0})
    model = create_model(args.model, settings)
    model.load()
    # Attach the catalog here first: this process then polls it beside the daemon's thread.
    reader = Store.open(settings, model.info)
    daemon = WatchDaemon(settings, model, [folder], recluster=None)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    if not daemon.ready.wait(120):
        sys.exit("the daemon did not start")

    copied: dict[str, float] = {}
    searchable: dict[str, float] = {}

    def poll() -> None:
        while len(searchable) < len(photos):
            waiting = [p for p in copied if p not in searchable]
            if waiting:
                done = {f.path for f in reader.faces()}
                now = time.perf_counter()
                for p in waiting:
                    if p in done:
                        searchable[p] = now
            time.sleep(POLL)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for photo in photos:
        dest = folder / photo.name
        shutil.copy2(photo, dest)
        copied[str(dest)] = time.perf_counter()
        if args.interval:
            time.sleep(args.interval)
    poller.join(600)
    daemon.stop()
    thread.join(120)
    reader.close(save=False)

    latency = [searchable[p] - copied[p] for p in copied if p in searchable]
    model_time = []
    for photo in photos:
        started = time.perf_counter()
        model.analyze([decode(photo, max_pixels=settings.max_image_pixels,
                              max_bytes=settings.max_file_bytes)])
        model_time.append(time.perf_counter() - started)
    shutil.rmtree(work, ignore_errors=True)

    missing = len(photos) - len(latency)
    print(f"{len(photos)} photos ({args.glob}), one every {args.interval} s, model {args.model}, "
          f"settle {settings.watch_settle} s, debounce {settings.watch_debounce} s, "
          f"batch {settings.batch_size}" + (f"; {missing} never searchable" if missing else ""))
    print(f"{'':24}{'median':>8}{'p95':>8}")
    for name, values in (("copy -> searchable (s)", latency), ("model alone (s)", model_time)):
        print(f"{name:24}{statistics.median(values):8.3f}{percentile(values, 0.95):8.3f}")
    ratio = [lat / m for lat, m in zip(latency, model_time, strict=False)]
    print(f"{'ratio':24}{statistics.median(ratio):8.1f}{percentile(ratio, 0.95):8.1f}")
    beyond = statistics.median(latency) - settings.watch_settle - statistics.median(model_time)
    print(f"median overhead beyond settle and model: {beyond:.3f} s")


if __name__ == "__main__":
    main()
