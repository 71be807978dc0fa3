"""Measure detection: faces found on the group photos (recall against labels.csv) and false
faces on non_faces/, for each model and, for sface, each detection size and score floor.

    uv run python scripts/measure_detection.py --faces ../shared/faces

Recall counts min(found, expected) per photo over the sum of expected faces ("~25" is read as
25, "2+" as 2), so extra faces on a photo do not raise it; "extra" sums found - expected where
positive (often real background faces the labels leave out). False faces are every face found
on non_faces/clean and non_faces/hard. `--per-photo` adds the count on every group photo (and
on every non-face photo with a face), one column per row of the table, to compare detection
changes photo by photo:

    uv run python scripts/measure_detection.py --models sface,dlib --sizes 1024 --scores 0.8 \
        --min-face-sizes 10 --per-photo
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import replace
from pathlib import Path

from indexer import settings as settings_mod
from indexer.imageio import decode
from indexer.models import create_model


def expected_counts(folder: Path) -> dict[Path, int]:
    with (folder / "labels.csv").open() as fh:
        return {folder / row["file"]: int(re.sub(r"\D", "", row["expected_faces"]))
                for row in csv.DictReader(fh)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=Path("../shared/faces"))
    parser.add_argument("--models", default="sface,dlib")
    parser.add_argument("--sizes", default="640,1024,1600,2048")
    parser.add_argument("--scores", default="0.6,0.7,0.8,0.9")
    parser.add_argument("--min-face-sizes", default="10,20",
                        help="smallest face kept (full-resolution pixels), comma-separated")
    parser.add_argument("--per-photo", action="store_true",
                        help="then the count on each photo, one column per row of the table")
    args = parser.parse_args()

    base = settings_mod.load({"home": Path("/nonexistent")}, environ={})
    groups = expected_counts(args.faces / "group_photos")
    non_faces = sorted(p for p in (args.faces / "non_faces").rglob("*") if p.is_file())
    images = {p: decode(p, max_pixels=base.max_image_pixels, max_bytes=base.max_file_bytes)
              for p in [*groups, *non_faces]}
    total = sum(groups.values())
    print(f"{len(groups)} group photos, {total} labelled faces; {len(non_faces)} non-face photos")
    print("| model | min_face_size | detect_max_side | min_score | found on groups | recall | "
          "extra | false faces (non_faces) | opencv_group1 (~25) |")
    print("|---|---|---|---|---|---|---|---|---|")
    columns: list[tuple[str, dict[Path, int]]] = []
    for name in args.models.split(","):
        sizes = [int(s) for s in args.sizes.split(",")] if name == "sface" else [1024]
        scores = [float(s) for s in args.scores.split(",")] if name == "sface" else [None]
        for min_size, size in [(m, s) for m in map(int, args.min_face_sizes.split(","))
                               for s in sizes]:
            settings = replace(base, detect_max_side=size, min_face_size=min_size,
                               min_score=min(scores) if scores[0] is not None else None)
            model = create_model(name, settings)
            found = {p: model.analyze([rgb])[0] for p, rgb in images.items()}
            for floor in scores:
                def count(p: Path, floor: float | None = floor,
                          found: dict = found) -> int:  # type: ignore[type-arg]
                    return sum(1 for f in found[p] if floor is None or f.score >= floor)
                hits = sum(min(count(p), n) for p, n in groups.items())
                extra = sum(max(0, count(p) - n) for p, n in groups.items())
                false = sum(count(p) for p in non_faces)
                group1 = count(args.faces / "group_photos" / "opencv_group1.jpg")
                shown = floor if floor is not None else "default"
                columns.append((f"{name} {min_size}px {size} {shown}",
                                {p: count(p) for p in images}))
                print(f"| {name} | {min_size} | {size} | {shown} | "
                      f"{sum(count(p) for p in groups)} | {hits / total:.2f} ({hits}/{total}) | "
                      f"{extra} | {false} | {group1} |", flush=True)
    if args.per_photo:
        print("\n| photo | expected | " + " | ".join(c for c, _ in columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for p in images:
            if p in groups or any(counts[p] for _, counts in columns):
                print(f"| {p.relative_to(args.faces)} | {groups.get(p, 0)} | "
                      + " | ".join(str(counts[p]) for _, counts in columns) + " |")


if __name__ == "__main__":
    main()
