"""Time the web app's pages at 10k and 100k faces, idle and beside the watch daemon ingesting.

    uv run python scripts/bench_web.py [--sizes 10000 100000] [--requests 60] [--work DIR]
        [--photos ../shared/faces/lfw] [--ingest 300] [--batches 5]

(homes are built once under --work/base-SIZE and reused by later runs.)

For each size: a synthetic home (indexer.synthetic_home, written through the store's write path;
its true identities are the clusters, the 10 largest named), then `faceidx serve` in a
subprocess on 127.0.0.1, timed with an HTTP client over loopback:

- the People page (100 people), page 1 and a page deep in the list, and filtered by name;
- a Person page (120 face crops) of the largest person and of a middle-sized one;
- GET /api/people/{id}/faces?limit=100;
- a face crop from the cache (the crops of the sampled faces are written into the cache first:
  synthetic faces have no photo to cut them from).

Each is timed right after a write to the catalog (the worst case: nothing read before can be
reused), also with a server that opens DuckDB for every read (as before the attached catalog,
same run: the ratio), then with nothing else running, then while a `faceidx watch` subprocess
ingests real photos (`--ingest` LFW photos copied into another folder) into the same home,
going round the pages until the daemon has committed `--batches` batches: it prints how long a
batch took and the longest any page request waited for the catalog (from the server's
Server-Timing header). Then the crops of faces the daemon ingested are requested for the first
time (cut from their real photos). It prints p50/p95 per request, the server's CPU time per
request, and ratios; the target is p95 < 150 ms for a page of 100 people.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
NOTES: list[str] = []


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Timings:
    """Per request: wall ms seen by the client, and from the server's Server-Timing header
    the ms it spent getting the catalog (attaching it; waiting while the daemon writes) and
    its CPU ms."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.catalog: list[float] = []
        self.cpu: list[float] = []

    def get(self, client: httpx.Client, url: str) -> None:
        t = time.perf_counter()
        r = client.get(url)
        self.wall.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        timing = dict(part.strip().split(";dur=") for part in
                      r.headers.get("server-timing", "").split(",") if ";dur=" in part)
        self.catalog.append(float(timing.get("catalog", 0)))
        self.cpu.append(float(timing.get("cpu", 0)))

    def row(self, label: str, name: str) -> tuple[str, str, float, float, float, float, float]:
        return (label, name, pct(self.wall, .5), pct(self.wall, .95), max(self.wall),
                pct(self.cpu, .5), max(self.catalog))


def time_url(client: httpx.Client, url: str, n: int, into: Timings | None = None) -> Timings:
    for _ in range(3):  # warm-up
        client.get(url).raise_for_status()
    out = Timings()
    for _ in range(n):
        out.get(client, url)
    if into is not None:
        for mine, theirs in ((out.wall, into.wall), (out.catalog, into.catalog),
                             (out.cpu, into.cpu)):
            theirs.extend(mine)
    return out


class DaemonLog:
    """The watch daemon's -v log read as it comes: when each batch was committed."""

    def __init__(self, proc: subprocess.Popen, path: Path) -> None:
        import threading

        self.batches: list[float] = []
        self.path = path
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self.path.open("w") as fh:
            for line in self._proc.stderr:  # type: ignore[union-attr]
                if "indexed " in line and " new face(s)" in line:
                    self.batches.append(time.perf_counter())
                fh.write(line)
                fh.flush()

    def between(self, start: float, end: float) -> list[float]:
        return [t for t in self.batches if start <= t <= end]


def time_after_change(client: httpx.Client, url: str, n: int, settings) -> Timings:  # type: ignore[no-untyped-def]
    """Each request right after a write to the catalog (as after each batch of the daemon):
    nothing read before can be reused, so each reads the catalog again."""
    from indexer.store import Store

    out = Timings()
    for i in range(n):
        with Store.open(settings, keep_open=False) as store:
            store.set_meta("bench_web", str(i))
        out.get(client, url)
    return out


def start_serve(home: Path, *, open_per_read: bool = False) -> tuple[subprocess.Popen, str]:
    """`faceidx serve` in a subprocess; with open_per_read, the same app reading as before
    the attached catalog (a DuckDB connection opened for every read), for comparison."""
    if open_per_read:
        cmd = [sys.executable, "-c", "import sys; from indexer import settings as s; "
               "from cli.serve_cmd import WebServer; "
               "w = WebServer(s.load({'home': sys.argv[1]}), host='127.0.0.1', port=0, "
               "read_only=False, beside_writer=True); print(w.url, flush=True); w.run()",
               str(home)]
    else:
        cmd = [sys.executable, "-m", "cli.app", "serve", "--home", str(home), "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # no signal meant for another child
    url = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not url.startswith("http"):
        raise SystemExit("faceidx serve did not start")
    return proc, url.rstrip("/")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


def seed_crops(settings, face_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Put a crop in the cache for each of these (synthetic, photo-less) faces."""
    from PIL import Image

    from indexer import browse
    from indexer.crops import crop_path

    tile = Image.new("RGB", (settings.crop_size, settings.crop_size), (150, 120, 100))
    for face in browse.faces(settings, face_ids):
        path = crop_path(settings.home, face)
        path.parent.mkdir(parents=True, exist_ok=True)
        tile.save(path, "JPEG", quality=85)


def time_crops(client: httpx.Client, urls: list[str]) -> Timings:
    out = Timings()
    for url in urls:
        out.get(client, url)
    return out


def daemon_phase(client: httpx.Client, urls: dict[str, str], crops: list[str], size: int,  # type: ignore[no-untyped-def]
                 root: Path, home: Path, lfw: list[Path], args) -> list:
    """The pages timed while `faceidx watch` ingests real photos into the home, batch after
    batch: the requests go round the pages, so each page is timed across the whole ingest.
    Prints how many batches the daemon committed meanwhile, how long a batch took, and the
    longest any request waited for the catalog."""
    from indexer import browse
    from indexer import settings as settings_mod

    settings = settings_mod.load({"home": home})
    inbox = root / "inbox"
    inbox.mkdir()
    for src in lfw[:args.ingest]:
        shutil.copy(src, inbox / src.name)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cli.app", "watch", str(inbox), "--home", str(home),
         "--recluster-every", "0", "-v"], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = DaemonLog(watcher, root / "watch.log")
    label = f"{size}+daemon"
    rows = []
    try:
        while len(log.batches) < 1:  # the model is loaded and the first batch is in
            if watcher.poll() is not None:
                time.sleep(0.5)
                raise SystemExit(f"the daemon exited: {log.path.read_text()}")
            time.sleep(0.2)
        started = time.perf_counter()
        timings = {name: Timings() for name in urls}
        for url in urls.values():  # warm-up
            client.get(url).raise_for_status()
        rounds = 0  # round the pages until the daemon has committed --batches batches
        while rounds < args.requests or (len(log.between(started, time.perf_counter()))
                                         < args.batches and watcher.poll() is None
                                         and time.perf_counter() - started < args.max_seconds):
            for name, url in urls.items():
                timings[name].get(client, url)
            rounds += 1
        crop_times = time_crops(client, crops[:args.requests])
        ended = time.perf_counter()
        for name, t in timings.items():
            rows.append(t.row(label, name))
        rows.append(crop_times.row(label, "Face crop (cached)"))
        during = log.between(started, ended)
        before = [t for t in log.batches if t < started][-1:]
        gaps = [b - a for a, b in zip(before + during, during, strict=False)]
        worst = max(max(t.catalog) for t in timings.values())
        reads = sum(1 for t in timings.values() for w in t.catalog if w > 0)
        total_requests = sum(len(t.catalog) for t in timings.values())
        worst_wall = max(max(t.wall) for t in timings.values())
        waits = sorted(w for t in timings.values() for w in t.catalog)
        NOTES.append(f"[{size}] the daemon committed {len(during)} batches of up to "
              f"{settings.batch_size} photos in the {ended - started:.0f} s of timing "
              f"({len(log.batches)} in all, of {args.ingest} photos); "
              f"a batch took p50 {pct(gaps, .5) * 1000 if gaps else float('nan'):.0f} ms, "
              f"shortest {min(gaps, default=float('nan')) * 1000:.0f} ms; "
              f"{reads} of the {total_requests} page requests read the catalog (the others: "
              f"unchanged, from memory); the longest wait for the catalog of any: "
              f"{worst:.0f} ms (p95 {pct(waits, .95):.1f} ms; slowest page {worst_wall:.0f} ms)")
        fresh = [f for f in browse.unassigned(settings, limit=args.requests).others
                 if not f.path.startswith("synthetic")]
        if fresh:
            t = time_crops(client, [f"/faces/{f.face_id}.jpg" for f in fresh])
            rows.append(t.row(label, f"Face crop, first request ({len(fresh)} real photos)"))
    finally:
        stop(watcher)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--work", type=Path, default=Path("/tmp/faceidx-bench-web"))
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    ap.add_argument("--ingest", type=int, default=300, help="photos the daemon ingests")
    ap.add_argument("--batches", type=int, default=5, help="with the daemon: go round the "
                    "pages until it has committed this many batches")
    ap.add_argument("--max-seconds", type=float, default=300,
                    help="with the daemon: time the pages at most this long")
    ap.add_argument("--build-only", action="store_true", help="only build the homes")
    args = ap.parse_args()

    from indexer import browse, corrections, service
    from indexer import settings as settings_mod
    from indexer.crops import crop_key
    from indexer.synthetic_home import build

    lfw = sorted(args.photos.glob("*/*.jpg"))
    if len(lfw) < args.ingest:
        raise SystemExit(f"{args.photos}: {len(lfw)} photos, fewer than --ingest {args.ingest}")
    rows: list[tuple[str, str, float, float, float, float, float]] = []
    for size in args.sizes:
        base = args.work / f"base-{size}"
        if not (base / "catalog.duckdb").exists():  # built once, copied for each run
            shutil.rmtree(base, ignore_errors=True)
            settings = settings_mod.load({"home": base})
            t = time.perf_counter()
            build(settings, size, "dlib", named=0)
            for i, person in enumerate(service.people(settings)[:10]):  # the 10 largest
                corrections.rename(settings, person["cluster_id"], f"Person {i + 1}")
            print(f"[{size}] synthetic home in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        if args.build_only:
            continue
        root = args.work / f"run-{size}"
        shutil.rmtree(root, ignore_errors=True)
        home = root / "home"
        shutil.copytree(base, home)
        settings = settings_mod.load({"home": home})
        people = service.people(settings)
        total = len(people)
        largest = max(people, key=lambda p: p["size"])
        middle = sorted(people, key=lambda p: p["size"])[len(people) // 2]
        named = next(p for p in people if p["name"])
        sample = [f.face_id for f in browse.person_page(settings, largest["cluster_id"], 0,
                                                        120).faces]
        seed_crops(settings, sample)
        crops = [f"/faces/{f.face_id}.jpg?v={crop_key(f.content_hash, f.bbox)}"
                 for f in browse.faces(settings, sample)]
        urls = {
            "People page 1 (100 people)": "/",
            f"People page {total // 200 + 1} (100 people)": f"/?offset={total // 200 * 100}",
            "People filtered by name": f"/?q={named['name'][:3]}",
            f"Person page, largest ({largest['size']} faces, 120 shown)":
                f"/people/{largest['cluster_id']}",
            f"Person page, median ({middle['size']} faces)": f"/people/{middle['cluster_id']}",
            "API person faces (limit 100)":
                f"/api/people/{largest['cluster_id']}/faces?limit=100",
        }
        proc, base = start_serve(home)
        host = base.split("//", 1)[1]
        try:
            with httpx.Client(base_url=base, headers={"Host": host}, timeout=120) as client:
                for name, url in urls.items():  # the worst case: after every write
                    t = time_after_change(client, url, max(10, args.requests // 3), settings)
                    rows.append(t.row(f"{size} changed", name))
                for name, url in urls.items():
                    rows.append(time_url(client, url, args.requests).row(f"{size}", name))
                rows.append(time_crops(client, crops[:args.requests]).row(
                    f"{size}", "Face crop (cached)"))
                rows += daemon_phase(client, urls, crops, size, root, home, lfw, args)
        finally:
            stop(proc)
        # the same worst case, reading as before the attached catalog (same run, same load)
        proc, base = start_serve(home, open_per_read=True)
        try:
            with httpx.Client(base_url=base, headers={"Host": base.split("//", 1)[1]},
                              timeout=120) as client:
                for name, url in urls.items():
                    t = time_after_change(client, url, max(10, args.requests // 3), settings)
                    rows.append(t.row(f"{size} chg/open", name))
        finally:
            stop(proc)
    if not rows:
        return
    idle = {(r[0], r[1]): r for r in rows if "+" not in r[0] and " " not in r[0]}
    print(f"{'faces':<14} {'request':<48} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
          f"{'p95 vs idle':>11} {'cpu p50':>8} {'catalog max':>11}")
    for r in rows:
        base_row = idle.get((r[0].split("+")[0].split(" ")[0], r[1]))
        ratio = f"{r[3] / base_row[3]:.2f}x" if base_row is not None and base_row is not r \
            else ""
        print(f"{r[0]:<14} {r[1]:<48} {r[2]:8.1f} {r[3]:8.1f} {r[4]:8.1f} {ratio:>11} "
              f"{r[5]:8.1f} {r[6]:11.1f}")
    print("(ms; cpu: the server's CPU time per request; catalog: the most time one request "
          "spent getting the catalog, attaching it and waiting while the daemon wrote)")
    opened = {(r[0].split(" ")[0], r[1]): r for r in rows if r[0].endswith("chg/open")}
    for r in rows:
        if r[0].endswith(" changed") and (r[0].split(" ")[0], r[1]) in opened:
            o = opened[(r[0].split(" ")[0], r[1])]
            print(f"[{r[0].split(' ')[0]}] after a write, {r[1]}: p95 {r[3]:.0f} ms attached "
                  f"vs {o[3]:.0f} ms opening DuckDB per read ({r[3] / o[3]:.2f}x); server CPU "
                  f"p50 {r[5]:.0f} vs {o[5]:.0f} ms")
    for note in NOTES:
        print(note)
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
