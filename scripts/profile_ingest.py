"""Where ingest time goes: CPU milliseconds per stage and per photo category, for sface and
dlib, on the same fixed mix as scripts/bench_ingest.py, one photo at a time on one thread.

    uv run python scripts/profile_ingest.py [--faces ../shared/faces] [--lfw 20]

Stages: read+hash (the file's bytes and its content hash), decode (the detection copy: JPEGs
in Pillow's draft mode), detect (YuNet / HOG on that copy), align (sface: 5-point warp, with the
full-resolution decode where a face needs it), embed (SFace / dlib ResNet), and for dlib "align
+ embed" together (landmarks, full decode, chips, descriptors). Then the pipeline without the
model: `faceidx index` of the same files with a model that hands back the faces found above, so
it times scan, read, hash and the store's commits. CPU time of the calling thread, so other
work on the machine inflates it less than wall time (it still does: shared caches and cores).
The "model CPU s" total is the floor of one core's work per photo; with every core busy,
photos/s cannot beat cores / (that per photo).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import REPO, photo_set  # noqa: E402

from indexer import settings as settings_mod  # noqa: E402
from indexer.imageio import Photo, RawFile, read_raw  # noqa: E402
from indexer.models import create_model  # noqa: E402
from indexer.pipeline import Indexer  # noqa: E402
from indexer.store import Store  # noqa: E402
from indexer.types import FaceResult  # noqa: E402

STAGES = {"sface": ("read+hash", "decode", "detect", "align", "embed"),
          "dlib": ("read+hash", "decode", "detect", "align+embed")}


class _Replay:
    """A model that hands back faces found before (by content hash): the pipeline alone."""

    def __init__(self, info: object, found: dict[str, list[FaceResult]]) -> None:
        self.info = info
        self._found = found

    def load(self) -> None:
        pass

    def analyze(self, images: Sequence[object]) -> list[list[FaceResult]]:
        raise NotImplementedError

    def analyze_stream(self, raws: Iterable[RawFile], **_: object
                       ) -> Iterator[tuple[RawFile, tuple[list[FaceResult], tuple[int, int]]]]:
        for raw in raws:
            yield raw, (self._found[raw.content_hash], (1, 1))


def profile(name: str, settings: settings_mod.Settings, files: list[tuple[str, Path]],
            work: Path) -> None:
    model = create_model(name, settings)
    model.load()
    ms: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    photos: dict[str, int] = defaultdict(int)
    faces: dict[str, int] = defaultdict(int)
    found: dict[str, list[FaceResult]] = {}

    def timed(category: str, stage: str, fn, *args):  # type: ignore[no-untyped-def]
        t = time.thread_time()
        out = fn(*args)
        ms[category][stage] += (time.thread_time() - t) * 1000
        return out

    for category, path in files:
        photos[category] += 1
        raw = timed(category, "read+hash",
                    lambda path=path: read_raw(path, max_bytes=settings.max_file_bytes))
        photo = Photo(raw, max_pixels=settings.max_image_pixels)
        small, scale = timed(category, "decode", photo.detection_copy, settings.detect_max_side)
        if name == "sface":
            dets = timed(category, "detect", model.detect, photo)  # type: ignore[attr-defined]
            chips = timed(category, "align", lambda photo=photo, dets=dets: [
                model.chip(photo, lm) for _, _, lm in dets])  # type: ignore[attr-defined]
            if chips:
                timed(category, "embed", model.embed, chips)  # type: ignore[attr-defined]
            result = model.analyze([photo])[0]
        else:
            t = time.thread_time()
            model._detector.run(small, settings.dlib_upsample,  # type: ignore[attr-defined]
                                model.min_score)  # type: ignore[attr-defined]
            detect_ms = (time.thread_time() - t) * 1000
            ms[category]["detect"] += detect_ms
            # analyze runs HOG again: align+embed is its time less the detection just timed
            t = time.thread_time()
            result = model.analyze([photo])[0]
            ms[category]["align+embed"] += (time.thread_time() - t) * 1000 - detect_ms
        faces[category] += len(result)
        found[raw.content_hash] = result

    stages = STAGES[name]
    print(f"\n{name}: CPU ms per photo (one thread)")
    print("| photos | n | faces | " + " | ".join(stages) + " | model (detect..embed) |")
    print("|---|---|---|" + "---|" * (len(stages) + 1))
    totals: dict[str, float] = defaultdict(float)
    for category in photos:
        n = photos[category]
        row = [ms[category][s] / n for s in stages]
        for s in stages:
            totals[s] += ms[category][s]
        print(f"| {category} | {n} | {faces[category]} | "
              + " | ".join(f"{v:.0f}" for v in row) + f" | {sum(row[2:]):.0f} |")
    n = sum(photos.values())
    print(f"| all | {n} | {sum(faces.values())} | "
          + " | ".join(f"{totals[s] / n:.0f}" for s in stages)
          + f" | {sum(totals[s] for s in stages[2:]) / n:.0f} |")
    model_s = sum(totals[s] for s in stages[2:]) / 1000
    print(f"{name}: model CPU {model_s:.1f} s for {n} photos ({sum(faces.values())} faces); "
          f"decode {totals['decode'] / 1000:.1f} s, read+hash {totals['read+hash'] / 1000:.1f} s")
    if name == "sface" and sum(faces.values()):
        print(f"  sface embed {totals['embed'] / sum(faces.values()):.0f} ms/face, detect "
              f"{totals['detect'] / n:.0f} ms/photo")

    # the pipeline without the model: scan, read, hash, store
    library = work / "library"
    run = replace(settings, home=work / f"home-replay-{name}")
    t, c = time.perf_counter(), time.process_time()
    with Store.open(run, model.info) as store, \
            Indexer(store, _Replay(model.info, found), run) as indexer:  # type: ignore[arg-type]
        summary = indexer.index([library])
    print(f"  pipeline without the model (scan, read, hash, store {summary.faces_added} faces): "
          f"{(time.process_time() - c) * 1000 / n:.0f} CPU ms/photo, "
          f"{(time.perf_counter() - t) * 1000 / n:.0f} ms/photo wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--models", default="sface,dlib")
    parser.add_argument("--lfw", type=int, default=20, help="LFW photos in the set")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    photos = photo_set(args.faces, args.lfw)
    work = Path(tempfile.mkdtemp(prefix="faceidx-profile-"))
    try:
        library = work / "library"
        library.mkdir()
        files = []
        for i, p in enumerate(photos):
            target = library / f"{i:04d}_{p.name}"
            shutil.copy2(p, target)
            files.append((p.relative_to(args.faces).parts[0], target))
        settings = settings_mod.load({"home": work / "home", "model_threads": 1,
                                      "facenet_probe": ""})
        print(f"{len(photos)} photos, detection copy at most {settings.detect_max_side} px")
        for name in args.models.split(","):
            profile(name, settings, files, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
