"""Build a collage set for `faceidx eval`: LFW portraits of 2-4 different people side by side.

    uv run python scripts/make_collages.py --out /tmp/collages [--identities 150] [--seed 0]
    uv run faceidx eval --model dlib /tmp/collages

Each collage lives in the folder of its main person, whose portrait is shown at full size
(250 px); the 1-3 others, drawn at random from the other identities, are shown smaller
(170 px), so `eval` scores the main face and clusters the rest unscored. Every collage holds
faces of different people: the cannot-link count `eval` reports must be 0.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--faces", type=Path, default=FACES, help="the shared faces folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--identities", type=int, default=150,
                    help="main people (each with >= 4 LFW photos; 2 collages each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    people: dict[str, list[Path]] = {}
    with (args.faces / "index.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["dataset"] == "lfw":
                people.setdefault(row["identity"], []).append(args.faces / row["file"])
    rng = np.random.default_rng(args.seed)
    several = sorted(n for n, fs in people.items() if len(fs) >= 4)
    main_people = [several[i] for i in sorted(rng.choice(len(several), args.identities,
                                                         replace=False))]
    others = sorted(set(people) - set(main_people))
    made = 0
    for name in main_people:
        photos = sorted(people[name])
        for k in range(2):
            n_others = int(rng.integers(1, 4))
            picks = [others[i] for i in rng.choice(len(others), n_others, replace=False)]
            tiles = [Image.open(photos[k]).convert("RGB")]
            tiles += [Image.open(people[p][0]).convert("RGB").resize((170, 170)) for p in picks]
            sheet = Image.new("RGB", (250 + 170 * n_others, 250), "white")
            sheet.paste(tiles[0], (0, 0))
            for j, tile in enumerate(tiles[1:]):
                sheet.paste(tile, (250 + 170 * j, 40))
            dest = args.out / name / f"{name}_collage_{k}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            sheet.save(dest, quality=92)
            made += 1
    print(f"{made} collages of {len(main_people)} people in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
