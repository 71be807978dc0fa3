"""`faceidx export` at scale: wall time, CPU time and peak RSS per index home, in one run.

    uv run python scripts/bench_export.py /tmp/scale_bench/dlib_100000 \
        /work/homes/synth-dlib-1000000 [--out /tmp/bench_export]

Each home is exported once by a fresh `faceidx export` process (the real CLI, its catalog
opened read-only) into a scratch folder that is removed after. Per home it prints the faces,
clusters and grid cells, the wall seconds, the CPU seconds (user + system; crowding by other
processes inflates these far less than wall time) and the peak RSS of that process, then how
time and memory grow from one home to the next. It checks that the catalog's bytes are
unchanged by the export. Synthetic homes (`scripts/synthetic_home.py`) have no photos: their
grid cells are placeholders, so the figures cover everything but cropping faces from photos.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FACEIDX = [sys.executable, "-c", "import sys; from cli.app import main; sys.argv[0] = "
           "'faceidx'; main()"]


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_once(home: Path, out: Path) -> dict[str, float | int | str]:
    """One `faceidx export --json` of `home` into `out`: its report plus wall, CPU, peak RSS."""
    before = _digest(home / "catalog.duckdb")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log_out, log_err = out.parent / f"{out.name}.stdout", out.parent / f"{out.name}.stderr"
    start = time.perf_counter()
    with log_out.open("w") as fo, log_err.open("w") as fe:
        proc = subprocess.Popen([*FACEIDX, "export", str(out), "--json", "--home", str(home)],
                                cwd=REPO, env=env, stdout=fo, stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS and CPU
    wall = time.perf_counter() - start
    stdout, stderr = log_out.read_text(), log_err.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export of {home} failed (see {log_err}):\n{stderr[-2000:]}")
    start_json = stdout.find("{\n")
    if start_json < 0:
        raise SystemExit(f"export of {home} printed no JSON report (see {log_out})")
    if start_json:
        print(f"(export printed before its report: {stdout[:start_json][:300]!r})")
    report, _ = json.JSONDecoder().raw_decode(stdout[start_json:])
    log_out.unlink()
    log_err.unlink()
    if _digest(home / "catalog.duckdb") != before:
        raise SystemExit(f"export changed {home / 'catalog.duckdb'}")
    return {"home": str(home), "faces": report["faces"], "clusters": report["clusters"],
            "grid_faces": report["grid_faces"], "placeholder_cells": report["placeholder_cells"],
            "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "rss_mb": round(usage.ru_maxrss / 1024),
            "stderr_tail": stderr.strip().splitlines()[-1] if stderr.strip() else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("homes", nargs="+", type=Path, help="index homes, smallest first")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_export"),
                        help="scratch folder for the exports (removed after each)")
    args = parser.parse_args()
    rows = []
    for home in args.homes:
        out = args.out / home.name
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        row = export_once(home, out)
        shutil.rmtree(out, ignore_errors=True)
        rows.append(row)
        print(f"{row['faces']:>9,} faces  {row['clusters']:>7,} clusters  "
              f"{row['grid_faces']:>8,} grid cells ({row['placeholder_cells']:,} placeholders)"
              f"  export {row['wall_s']:>7.1f} s wall  {row['cpu_s']:>7.1f} s CPU  "
              f"peak RSS {row['rss_mb']:>6,} MB   catalog unchanged", flush=True)
    for a, b in zip(rows, rows[1:], strict=False):
        x = b["faces"] / a["faces"]
        print(f"{a['faces']:,} -> {b['faces']:,} faces (x{x:.0f}): wall x"
              f"{b['wall_s'] / a['wall_s']:.1f}, CPU x{b['cpu_s'] / a['cpu_s']:.1f}, "
              f"RSS x{b['rss_mb'] / a['rss_mb']:.1f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
