"""Time the web app's pages at 10k and 100k faces, idle and beside the watch daemon ingesting.

    uv run python scripts/bench_web.py [--sizes 10000 100000] [--requests 60] [--work DIR]
        [--photos ../shared/faces/lfw] [--ingest 300]

For each size: a synthetic home (indexer.synthetic_home, written through the store's write path;
its true identities are the clusters, the 10 largest named), then `faceidx serve` in a
subprocess on 127.0.0.1, timed with an HTTP client over loopback:

- the People page (100 people), page 1 and a page deep in the list, and filtered by name;
- a Person page (120 face crops) of the largest person and of a middle-sized one;
- GET /api/people/{id}/faces?limit=100;
- a face crop from the cache (the crops of the sampled faces are written into the cache first:
  synthetic faces have no photo to cut them from).

Each is timed right after a write to the catalog (the worst case: nothing read before can be
reused), then with nothing else running, then again while a `faceidx watch` subprocess
ingests real photos (`--ingest` LFW photos copied into another folder) into the same home, which
takes the DuckDB writer lock for every batch. Then the crops of faces the daemon ingested are
requested for the first time (cut from their real photos). It prints p50/p95 per request and the
daemon/idle ratio; the target is p95 < 150 ms for a page of 100 people.
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_url(client: httpx.Client, url: str, n: int) -> list[float]:
    for _ in range(3):  # warm-up
        client.get(url).raise_for_status()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def time_after_change(client: httpx.Client, url: str, n: int, settings) -> list[float]:  # type: ignore[no-untyped-def]
    """Each request right after a write to the catalog (as after each batch of the daemon):
    nothing read before can be reused, so each pays for opening the catalog."""
    from indexer.store import Store

    out = []
    for i in range(n):
        with Store.open(settings, keep_open=False) as store:
            store.set_meta("bench_web", str(i))
        t = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def start_serve(home: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "cli.app", "serve", "--home", str(home),
                             "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, text=True,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--work", type=Path, default=Path("/tmp/faceidx-bench-web"))
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    ap.add_argument("--ingest", type=int, default=300, help="photos the daemon ingests")
    ap.add_argument("--build-only", action="store_true", help="only build the homes")
    args = ap.parse_args()

    from indexer import browse, corrections, service
    from indexer import settings as settings_mod
    from indexer.crops import crop_key
    from indexer.synthetic_home import build

    lfw = sorted(args.photos.glob("*/*.jpg"))
    if len(lfw) < args.ingest:
        raise SystemExit(f"{args.photos}: {len(lfw)} photos, fewer than --ingest {args.ingest}")
    rows: list[tuple[str, str, float, float, float]] = []
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
                    ms = time_after_change(client, url, max(10, args.requests // 3), settings)
                    rows.append((f"{size} changed", name, pct(ms, .5), pct(ms, .95), max(ms)))
                for phase in ("idle", "daemon"):
                    watcher = None
                    label = f"{size}" if phase == "idle" else f"{size}+daemon"
                    if phase == "daemon":
                        inbox = root / "inbox"
                        inbox.mkdir()
                        for src in lfw[:args.ingest]:
                            shutil.copy(src, inbox / src.name)
                        log = root / "watch.log"
                        with log.open("w") as fh:
                            watcher = subprocess.Popen(
                                [sys.executable, "-m", "cli.app", "watch", str(inbox), "--home",
                                 str(home), "--recluster-every", "0"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True)
                        before = service.status(settings)["images"]
                        while service.status(settings)["images"] == before:  # first batch in
                            if watcher.poll() is not None:
                                raise SystemExit(f"the daemon exited: {log.read_text()}")
                            time.sleep(0.5)
                        ingest_start = (time.perf_counter(), service.status(settings)["images"])
                    try:
                        for name, url in urls.items():
                            ms = time_url(client, url, args.requests)
                            rows.append((label, name, pct(ms, .5), pct(ms, .95), max(ms)))
                        ms = []
                        for url in crops[:args.requests]:
                            t = time.perf_counter()
                            client.get(url).raise_for_status()
                            ms.append((time.perf_counter() - t) * 1000)
                        rows.append((label, "Face crop (cached)", pct(ms, .5), pct(ms, .95),
                                     max(ms)))
                        if watcher is not None:
                            seconds = time.perf_counter() - ingest_start[0]
                            now = service.status(settings)
                            ingested = now["images"] - ingest_start[1]
                            still = (now["indexer_running"] or {}).get("queued", 0)
                            print(f"[{size}] the daemon wrote {ingested} photos in the "
                                  f"{seconds:.0f} s of timing ({still} still queued)",
                                  file=sys.stderr)
                            fresh = browse.unassigned(settings, limit=args.requests).others
                            fresh = [f for f in fresh if not f.path.startswith("synthetic")]
                            ms = []
                            for f in fresh:
                                t = time.perf_counter()
                                client.get(f"/faces/{f.face_id}.jpg").raise_for_status()
                                ms.append((time.perf_counter() - t) * 1000)
                            if ms:
                                rows.append((f"{size}+daemon",
                                             f"Face crop, first request ({len(ms)} real photos)",
                                             pct(ms, .5), pct(ms, .95), max(ms)))
                    finally:
                        if watcher is not None:
                            stop(watcher)
        finally:
            stop(proc)
    if not rows:
        return
    idle = {(r[0], r[1]): r for r in rows if "+" not in r[0] and " " not in r[0]}
    print(f"{'faces':<14} {'request':<48} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
          f"{'p95 vs idle':>11}")
    for r in rows:
        base_row = idle.get((r[0].split("+")[0].split(" ")[0], r[1]))
        ratio = f"{r[3] / base_row[3]:.2f}x" if base_row is not None and base_row is not r \
            else ""
        print(f"{r[0]:<14} {r[1]:<48} {r[2]:8.1f} {r[3]:8.1f} {r[4]:8.1f} {ratio:>11}")
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
