"""Ray against local worker processes on the same photos, in one run; and the single writer's
ceiling (what the driver commits when the model costs nothing).

    uv run python scripts/bench_ray.py [--faces ../shared/faces] [--lfw 60 | --lfw 40,340]
                                       [--actors 2] [--address HOST:PORT] [--reads driver]

`--lfw` takes one size or several (comma-separated): each size is a photo set of its own, run in
every mode, and with several sizes the bench fits each mode's mean time as a fixed cost per run
plus a cost per photo, prints both, and the photo count from which Ray's overhead is at most 15%
(a Ray run pays a larger fixed cost: actors that start Ray worker processes and import Ray Data).
Each mode indexes the same fixed photo set into a fresh home with `faceidx index`'s pipeline:
- local: the model in `--actors` worker processes on this machine (ParallelModel);
- ray-driver / ray-shared: the model in `--actors` Ray actors, photos sent by the driver or read
  by the workers from the shared path;
- writer: the analyses recorded from the first Ray run replayed for copies of the photos, so the
  run costs reading, hashing, planning and committing only: the most one driver can write.
Without --address a local Ray instance is started once (its start-up time, and Ray Data's first
execution in this process, are reported apart). Each mode runs `--rounds` times, the order
reversed every other round; the overheads are of the mean times, and per round. Before each
run the bench waits (up to 30 s, not counted) until Ray's processes are quiet: when a Ray run's
actors end, Ray starts idle worker processes, and that work must not land on the next run.

What a mode's time counts, alike for every mode: from opening a fresh store to the run's summary
(scan, read and hash, plan, the model on every photo, the commits), including starting the
model's workers cold and stopping them: local starts `--actors` processes that each load the
model and stops them at the end; Ray runs one Ray Data execution that creates `--actors` actors
that each load the model (a Ray worker process that imports Ray Data, then the model) and ends
them. That is what each `faceidx index` run pays. Not counted: starting Ray itself, which a
cluster pays once, not per run. Each run also prints when its first and last results came
(seconds from its start), for Ray when each actor's process started, its constructor began (and
after how many CPU seconds of its own: Ray's worker boot and the Ray Data import) and its model
was loaded (where the start-up goes), and the CPU seconds, sampled from /proc, of
the model's processes (local workers or Ray actors, start-up included), the driver (this
process: planning, commits, and for Ray, Ray Data's scheduling), and Ray's own processes
(raylet, GCS, agents, Ray Data's helper actors): on one machine they all share the same cores.
Each mode's summary adds up its CPU seconds and, for Ray, compares them with local's: on a
machine busy with other work the wall times swing by tens of percent from run to run (whichever
mode gets more of the cores wins), the CPU seconds much less; with the 2 cores saturated either
way, the wall overhead on a quiet machine follows the CPU overhead.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from indexer import settings as settings_mod
from indexer.distributed import LOCAL, RayAnalyzer, RayOptions, feed_actor
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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _group(pid: int) -> tuple[str, str]:
    """Whose CPU a process of this run is (the model's workers, the driver, or Ray's own), and
    its name."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone", ""
    if not cmd:  # a process that has exited (a zombie) keeps its CPU but shows no cmdline
        return "gone", ""
    name = " ".join(Path(w).name if w.startswith("/") else w
                    for w in cmd.decode(errors="replace").split("\0")[:2])[:60]
    return _group_of(pid, cmd), name


def _group_of(pid: int, cmd: bytes) -> str:
    if pid == os.getpid():
        return "driver"
    if cmd.startswith(b"ray::MapWorker") or b"spawn_main" in cmd:
        return "model"  # a Ray Data actor holding the model, or a local worker process
    if b"multiprocessing" in cmd:
        return "driver"  # the local pool's resource tracker
    return "ray"  # raylet, GCS, agents, idle workers, Ray Data's helper actors


class CpuMeter:
    """CPU seconds used by this process and its descendants while it runs, by `_group`: a
    sampler thread reads /proc every 0.5 s (a process that exits loses at most its last 0.5 s).
    Linux only; elsewhere it reports nothing."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> CpuMeter:
        if Path("/proc/self/stat").exists():
            self._read(first=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._read()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self._read()

    def _read(self, first: bool = False) -> None:
        for pid in [os.getpid(), *descendants(os.getpid())]:
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            if first:
                self.first[pid] = cpu
            group, name = _group(pid)
            if group != "gone":
                self.last[pid] = group, cpu
                self.names[pid] = name
            elif pid in self.last:  # exited: its last CPU, in the group it had while alive
                self.last[pid] = self.last[pid][0], cpu

    def busiest(self, n: int = 8) -> list[tuple[float, str]]:
        """The n processes that used the most CPU: (seconds, "group: name pid")."""
        used = [(cpu - self.first.get(pid, 0.0), f"{group}: {self.names[pid]} {pid}")
                for pid, (group, cpu) in self.last.items()]
        return sorted(used, reverse=True)[:n]

    def seconds(self) -> dict[str, float]:
        out = {"model": 0.0, "driver": 0.0, "ray": 0.0}
        for pid, (group, cpu) in self.last.items():
            out[group] += cpu - self.first.get(pid, 0.0)
        return out


def cpu_seconds(pid: int) -> float | None:
    """The CPU seconds (user + system, all its threads) process `pid` has used, from
    /proc/PID/stat; None for a process that is gone (Linux only)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def descendants(pid: int) -> list[int]:
    """The process ids of `pid`'s children, their children, and so on (Linux's /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def settle(most: float = 30.0, busy: float = 0.15) -> float:
    """Wait, up to `most` seconds, until this process's descendants (Ray's processes, workers
    still exiting) use less than `busy` of a core over a second: the previous run's aftermath
    (Ray starting idle workers after a run's actors end) must not land on the next run, whatever
    its mode. Returns the seconds waited (not counted in any run)."""
    t = time.perf_counter()
    while time.perf_counter() - t < most:
        with CpuMeter() as meter:
            time.sleep(1.0)
        used = meter.seconds()
        if used["model"] + used["ray"] < busy:
            break
    return time.perf_counter() - t


@dataclass
class Timing:
    """One mode's run: wall seconds, when its first and last results came (seconds from its
    start), photos, faces, CPU seconds by group."""

    seconds: float
    first_result: float
    last_result: float
    photos: int
    faces: int
    cpu: dict[str, float]
    busiest: list[tuple[float, str]]
    actors: list[tuple[float, float, float, float]]
    """Ray only: for each actor, when its process started, its constructor began and its model
    was loaded (seconds from the run's start), and the CPU seconds its process had used when its
    constructor began (Ray's worker boot and the Ray Data import)."""


class _FirstResult:
    """Wraps an analyzer and notes when it yields its first and its last result."""

    def __init__(self, inner: Analyzer, t0: float) -> None:
        self.inner, self.t0 = inner, t0
        self.first = self.last = float("nan")

    def __call__(self, raws: Iterable[RawFile]) -> Iterator[tuple[RawFile, Any]]:
        for result in self.inner(raws):
            self.last = time.perf_counter() - self.t0
            if self.first != self.first:  # nan: this is the first
                self.first = self.last
            yield result


def run(settings: Settings, home: str, library: Path, model: Any,
        analyzer: Analyzer | None = None) -> Timing:
    """One fresh index of `library`, timed from opening the store to the summary."""
    run_settings = replace(settings, home=settings.home.parent / home)
    with CpuMeter() as meter:
        t, wall = time.perf_counter(), time.time()
        with Store.open(run_settings, model.info) as store, \
                Indexer(store, model, run_settings, analyzer=analyzer) as indexer:
            first = indexer.analyzer = _FirstResult(indexer.analyzer, t)
            summary = indexer.index([library])
            if analyzer is None:
                model.close()  # the local worker processes end with the run, as Ray's actors do
        seconds = time.perf_counter() - t
    startups = getattr(getattr(analyzer, "inner", analyzer), "startups", {})
    actors = sorted((p - wall, c - wall, m - wall, cpu) for p, c, m, cpu in startups.values())
    return Timing(seconds, first.first, first.last, summary.new + summary.failed,
                  summary.faces_added, meter.seconds(), meter.busiest(), actors)


class Recorder:
    """Wraps an analyzer and keeps every analysis by file name (for the writer's replay)."""

    def __init__(self, inner: Analyzer) -> None:
        self.inner = inner
        self.seen: dict[str, Any] = {}

    def __call__(self, raws: Iterable[RawFile]) -> Iterator[tuple[RawFile, Any]]:
        self.seen = {}  # the last run's (the bench runs its largest set last)
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
    parser.add_argument("--lfw", default="60",
                        help="LFW photos in the set; several sizes comma-separated (40,340): "
                             "each size is a set of its own, run in every mode")
    parser.add_argument("--actors", type=int, default=2, help="worker processes / Ray actors")
    parser.add_argument("--address", default=LOCAL, help="a running Ray (default: start one)")
    parser.add_argument("--copies", type=int, default=8, help="copies per photo for the writer")
    parser.add_argument("--reads", default="driver,shared",
                        help="--ray-read modes to run, in this order")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of every mode; even rounds run the modes in reverse order "
                             "(local, driver, shared, shared, driver, local), so a load that "
                             "drifts during the run weighs on every mode alike")
    parser.add_argument("--cpu-detail", action="store_true",
                        help="after each run, its busiest processes and their CPU seconds")
    args = parser.parse_args()

    sizes = sorted({int(n) for n in args.lfw.split(",")})
    work = Path(tempfile.mkdtemp(prefix="faceidx-bench-ray-"))
    try:
        libraries = {}
        for lfw in sizes:
            library = libraries[lfw] = work / f"library-{lfw}"
            library.mkdir()
            for i, p in enumerate(photo_set(args.faces, lfw)):
                shutil.copy2(p, library / f"{i:04d}_{p.name}")
        settings = replace(settings_mod.load({"home": work / "home"}), workers=args.actors)
        print(f"load average {os.getloadavg()[0]:.1f} at the start; ", end="")
        print(f"sets of {', '.join(str(len(list(lib.iterdir()))) for lib in libraries.values())}"
              f" photos, model {args.model}, {args.actors} worker processes (local) "
              f"or Ray actors of 1 CPU, batch {settings.batch_size}, {args.rounds} rounds",
              flush=True)
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
        print(f"Ray start-up (once per cluster, or per run of faceidx --ray without an "
              f"address; not counted below): {time.perf_counter() - t0:.1f} s", flush=True)

        recorder = Recorder(analyzers[reads[0]])
        modes = ["local", *reads]
        timings: dict[tuple[int, str], list[Timing]] = {}
        runs = 0
        for lfw in sizes:
            for r in range(args.rounds):
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    runs += 1
                    analyzer = None if mode == "local" else \
                        recorder if mode == reads[0] else analyzers[mode]
                    waited = settle()
                    tm = run(settings, f"home-{runs}", libraries[lfw], local_model, analyzer)
                    timings.setdefault((lfw, mode), []).append(tm)
                    print(f"  {tm.photos} photos, round {r + 1} {mode:6s}: {tm.seconds:5.1f} s  "
                          f"{tm.photos / tm.seconds:5.2f} photos/s  {tm.faces} faces; results "
                          f"from {tm.first_result:4.1f} s to {tm.last_result:4.1f} s; CPU s: "
                          + _cpu_text(tm.cpu) + f" (settled {waited:.0f} s before)"
                          + _actors_text(tm.actors), flush=True)
                    if args.cpu_detail:
                        for cpu, who in tm.busiest:
                            print(f"      {cpu:5.1f} s  {who}")
        analyzers[reads[0]].close()
        print(f"load average {os.getloadavg()[0]:.1f} after the runs")
        for lfw in sizes:
            print(f"{timings[lfw, 'local'][0].photos} photos:")
            for mode in modes:
                summarize(mode, timings[lfw, mode], timings[lfw, "local"])
        if len(sizes) > 1:
            fixed_costs(sizes, modes, timings)
        largest = sizes[-1]
        n = timings[largest, "local"][0].photos
        local = _mean(r.seconds for r in timings[largest, "local"])

        copies = work / "copies"
        copies.mkdir()
        for f in sorted(libraries[largest].iterdir()):
            for c in range(args.copies):  # distinct bytes, so none is a copy of another
                (copies / f"{c}~{f.name}").write_bytes(f.read_bytes() + bytes([c]))
        writer = run(settings, "home-writer", copies, local_model, replay(recorder.seen))
        t_w, n_w, faces_w = writer.seconds, writer.photos, writer.faces
        print(f"single writer (model free): {n_w / t_w:7.1f} photos/s  {faces_w / t_w:7.1f} "
              f"faces/s committed ({n_w} photos, {faces_w} faces in {t_w:.1f} s)")
        print(f"one driver can feed about {(n_w / t_w) / (n / local):.0f} machines like this "
              f"one (writer photos/s over local photos/s at {n} photos)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fixed_costs(sizes: list[int], modes: list[str],
                timings: dict[tuple[int, str], list[Timing]]) -> None:
    """Each mode's time against its photo count, fitted as a fixed cost per run plus a cost per
    photo (least squares over the sizes' mean times): the fixed part is what a run pays before
    and after its photos (workers or actors starting and loading the model, Ray Data's
    execution); and the photo count from which Ray's overhead is at most 15%."""
    fits = {}
    for mode in modes:
        points = [(timings[s, mode][0].photos, _mean(r.seconds for r in timings[s, mode]))
                  for s in sizes]
        mx = _mean(x for x, _ in points)
        my = _mean(y for _, y in points)
        slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
        fits[mode] = (my - slope * mx, slope)
    a_l, b_l = fits["local"]
    if b_l <= 0:
        print("fixed cost per run: no fit (local times did not grow with the photo count: the "
              "machine's load changed too much during the run)")
        return
    common = timings[sizes[0], "local"][0].photos - sizes[0]
    print("fixed cost per run and cost per photo (time = fixed + photos x per photo, fitted "
          f"over the {len(sizes)} sizes; the sets differ by LFW portraits only, so `fixed` also "
          f"holds the {common} group and full-size photos every set has; Ray's fixed cost "
          "above local's is what a Ray run pays more, once per run):")
    for mode in modes:
        a, b = fits[mode]
        name = "local processes" if mode == "local" else f"ray --ray-read {mode}"
        line = f"  {name:22s}: fixed {a:5.1f} s  per photo {b * 1000:6.1f} ms"
        if mode != "local":
            line += f"  (fixed {a - a_l:+.1f} s, per photo {b / b_l - 1:+.0%} against local)"
            if b >= 1.15 * b_l:
                line += "; overhead above 15% at any size"
            else:
                n = max(0.0, (a - 1.15 * a_l) / (1.15 * b_l - b))
                line += f"; overhead at most 15% from about {n:.0f} photos per run"
        print(line)


def _actors_text(actors: list[tuple[float, float, float, float]]) -> str:
    """Where a Ray run's start-up went, actor by actor (seconds from the run's start; and the CPU
    seconds the actor's process had used when its constructor began)."""
    if not actors:
        return ""
    return "\n      actors: " + "; ".join(
        f"process {p:.1f} s, constructor {c:.1f} s (after {cpu:.1f} s CPU), model loaded "
        f"{m:.1f} s" for p, c, m, cpu in actors)


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def summarize(mode: str, runs: list[Timing], local: list[Timing]) -> None:
    """One mode's means, and its overhead against local processes (of the mean times, and
    round by round)."""
    t = _mean(r.seconds for r in runs)
    n, faces = runs[0].photos, runs[0].faces
    name = "local processes" if mode == "local" else f"ray --ray-read {mode}"
    line = f"  {name:22s}: {t:5.1f} s  {n / t:5.2f} photos/s  {faces} faces (mean of {len(runs)})"
    if runs is not local:
        t_local = _mean(r.seconds for r in local)
        line += f"  overhead {t / t_local - 1:+.0%} (rounds " + ", ".join(
            f"{a.seconds / b.seconds - 1:+.0%}" for a, b in zip(runs, local, strict=True)) + ")"
    first = _mean(r.first_result for r in runs)
    last = _mean(r.last_result for r in runs)
    cpu = {k: _mean(r.cpu[k] for r in runs) for k in runs[0].cpu}
    total = sum(cpu.values())
    text = f"; in all {total:.1f}"
    if runs is not local:
        text += f" ({total / _mean(sum(r.cpu.values()) for r in local) - 1:+.0%} CPU against local)"
    if runs[0].actors:  # the slowest actor of each run, averaged over the runs
        slowest = [_mean(max(a[i] for a in r.actors) for r in runs) for i in range(4)]
        text += (f"\n      {'':22s}  slowest actor: process started at {slowest[0]:.1f} s, "
                 f"constructor at {slowest[1]:.1f} s (the most CPU before it: {slowest[3]:.1f} "
                 f"s), model loaded at {slowest[2]:.1f} s")
    print(line + f"\n      {'':22s}  results from {first:.1f} s to {last:.1f} s; CPU s: "
          + _cpu_text(cpu) + text)


class _Echo:
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch


def warm_up(analyzer: RayAnalyzer) -> None:
    """Ray Data's one-off start in this process and on this Ray (its executor, its first tasks,
    the helper actors it creates once per Ray instance for actor pools), and faceidx's feed
    actor, which a cluster keeps between runs as Ray Data keeps its helpers: counted with Ray's
    start-up, not with the first mode run."""
    ray = analyzer._ray
    ray.get(feed_actor(ray).close.remote("warm-up"))
    ray.data.range(4, override_num_blocks=2).map_batches(
        _Echo, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0).materialize()


if __name__ == "__main__":
    main()
