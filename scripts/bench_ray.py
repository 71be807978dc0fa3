"""Ray against local worker processes on the same photos, in one run; and the single writer's
ceiling (what the driver commits when the model costs nothing).

    uv run python scripts/bench_ray.py [--faces ../shared/faces] [--lfw 60] [--actors 2]
                                       [--address HOST:PORT]

Each mode indexes the same fixed photo set into a fresh home with `faceidx index`'s pipeline:
- local: the model in `--actors` worker processes on this machine (ParallelModel);
- ray-driver / ray-shared: the model in `--actors` Ray actors, photos sent by the driver or read
  by the workers from the shared path;
- writer: the analyses recorded from the first Ray run replayed for copies of the photos, so the
  run costs reading, hashing, planning and committing only: the most one driver can write.
Without --address a local Ray instance is started once (its start-up time, and Ray Data's first
execution in this process, are reported apart). Each mode runs `--rounds` times, the order
reversed every other round; the overheads are of the mean times, and per round.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from indexer import settings as settings_mod
from indexer.distributed import LOCAL, RayAnalyzer, RayOptions
from indexer.imageio import RawFile
from indexer.models import create_model
from indexer.pipeline import Analyzer, Indexer
from indexer.settings import Settings
from indexer.store import Store

REPO = Path(__file__).resolve().parent.parent


def photo_set(faces: Path, lfw_count: int) -> list[Path]:
    """A fixed mix: LFW portraits, group photos, full-size personal photos."""
    with (faces / "index.csv").open() as fh:
        lfw = sorted(faces / r["file"] for r in csv.DictReader(fh) if r["dataset"] == "lfw")
    full_size = sorted(p for d in ("face_recognition_examples", "photoprism_album")
                       for p in (faces / d).rglob("*.jp*g"))
    groups = sorted((faces / "group_photos").glob("*.jpg"))
    return lfw[:: max(1, len(lfw) // lfw_count)][:lfw_count] + groups[:6] + full_size[:14]


def run(settings: Settings, home: str, library: Path, model: Any,
        analyzer: Analyzer | None = None) -> tuple[float, int, int]:
    """Seconds, photos indexed and faces added for one fresh index of `library`."""
    run_settings = replace(settings, home=settings.home.parent / home)
    t = time.perf_counter()
    with Store.open(run_settings, model.info) as store, \
            Indexer(store, model, run_settings, analyzer=analyzer) as indexer:
        summary = indexer.index([library])
    return time.perf_counter() - t, summary.new + summary.failed, summary.faces_added


class Recorder:
    """Wraps an analyzer and keeps every analysis by file name (for the writer's replay)."""

    def __init__(self, inner: Analyzer) -> None:
        self.inner = inner
        self.seen: dict[str, Any] = {}

    def __call__(self, raws: Iterable[RawFile]) -> Iterator[tuple[RawFile, Any]]:
        for raw, analysis in self.inner(raws):
            self.seen[raw.path.name] = analysis
            yield raw, analysis


def replay(seen: dict[str, Any]) -> Analyzer:
    def analyze(raws: Iterable[RawFile]) -> Iterator[tuple[RawFile, Any]]:
        for raw in raws:
            yield raw, seen[raw.path.name.split("~", 1)[-1]]
    return analyze


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--model", default="dlib")
    parser.add_argument("--lfw", type=int, default=60, help="LFW photos in the set")
    parser.add_argument("--actors", type=int, default=2, help="worker processes / Ray actors")
    parser.add_argument("--address", default=LOCAL, help="a running Ray (default: start one)")
    parser.add_argument("--copies", type=int, default=8, help="copies per photo for the writer")
    parser.add_argument("--reads", default="driver,shared",
                        help="--ray-read modes to run, in this order")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of every mode; even rounds run the modes in reverse order "
                             "(local, driver, shared, shared, driver, local), so a load that "
                             "drifts during the run weighs on every mode alike")
    args = parser.parse_args()

    photos = photo_set(args.faces, args.lfw)
    work = Path(tempfile.mkdtemp(prefix="faceidx-bench-ray-"))
    try:
        library = work / "library"
        library.mkdir()
        for i, p in enumerate(photos):
            shutil.copy2(p, library / f"{i:04d}_{p.name}")
        settings = replace(settings_mod.load({"home": work / "home"}), workers=args.actors)
        print(f"{len(photos)} photos, model {args.model}, {args.actors} worker processes (local) "
              f"or Ray actors of 1 CPU, batch {settings.batch_size}, {args.rounds} rounds")
        local_model = create_model(args.model, settings, parallel=True)
        local_model.load()

        t0 = time.perf_counter()
        options = RayOptions(address=args.address, actors=args.actors,
                             object_store_memory=200_000_000)
        reads = args.reads.split(",")
        analyzers = {read: RayAnalyzer(args.model, settings, replace(options, read=read))
                     for read in reads}
        analyzers[reads[0]].start()
        warm_up(analyzers[reads[0]])
        print(f"Ray start-up (once per run of faceidx --ray, not counted below): "
              f"{time.perf_counter() - t0:.1f} s")

        recorder = Recorder(analyzers[reads[0]])
        times: dict[str, list[float]] = {}
        counts: dict[str, tuple[int, int]] = {}
        modes = ["local", *reads]
        runs = 0
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                runs += 1
                if mode == "local":
                    t, n, faces = run(settings, f"home-{runs}", library, local_model)
                    local_model.close()  # type: ignore[attr-defined]  (each run starts its own)
                else:
                    analyzer = recorder if not recorder.seen and mode == reads[0] else \
                        analyzers[mode]
                    t, n, faces = run(settings, f"home-{runs}", library, local_model, analyzer)
                times.setdefault(mode, []).append(t)
                counts[mode] = n, faces
                print(f"  round {r + 1} {mode:6s}: {t:6.1f} s  {n / t:5.2f} photos/s  "
                      f"{faces} faces", flush=True)
        analyzers[reads[0]].close()
        t_local = sum(times["local"]) / len(times["local"])
        n, faces = counts["local"]
        print(f"local processes: {t_local:6.1f} s  {n / t_local:6.2f} photos/s  {faces} faces "
              f"(mean of {len(times['local'])})")
        for read in reads:
            t = sum(times[read]) / len(times[read])
            n_ray, faces_ray = counts[read]
            print(f"ray --ray-read {read:6s}: {t:6.1f} s  {n_ray / t:6.2f} photos/s  "
                  f"{faces_ray} faces  (overhead against local {t / t_local - 1:+.0%}; per round "
                  + ", ".join(f"{a / b - 1:+.0%}" for a, b in zip(times[read], times["local"],
                                                                 strict=True)) + ")")

        copies = work / "copies"
        copies.mkdir()
        for f in sorted(library.iterdir()):
            for c in range(args.copies):  # distinct bytes, so none is a copy of another
                (copies / f"{c}~{f.name}").write_bytes(f.read_bytes() + bytes([c]))
        t_w, n_w, faces_w = run(settings, "home-writer", copies, local_model,
                                replay(recorder.seen))
        print(f"single writer (model free): {n_w / t_w:7.1f} photos/s  {faces_w / t_w:7.1f} "
              f"faces/s committed ({n_w} photos, {faces_w} faces in {t_w:.1f} s)")
        print(f"one driver can feed about {(n_w / t_w) / (n / t_local):.0f} machines like this "
              "one (writer photos/s over local photos/s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Echo:
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch


def warm_up(analyzer: RayAnalyzer) -> None:
    """Ray Data's one-off start in this process and on this Ray (its executor, its first tasks,
    the helper actors it creates once per Ray instance for actor pools), which every
    `faceidx index --ray` pays once: counted with Ray's start-up, not with the first mode run."""
    ray = analyzer._ray
    ray.data.range(4, override_num_blocks=2).map_batches(
        _Echo, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0).materialize()


if __name__ == "__main__":
    main()
