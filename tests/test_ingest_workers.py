"""The pipeline with the model in worker processes (files streamed to them, decoded there) gives
what the one-process pipeline gives: the same faces, vectors, sizes and failure reasons."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer.models.sface_model import SfaceModel
from indexer.pipeline import Indexer
from indexer.settings import Settings
from indexer.store import Store
from indexer.workers import ParallelModel

PHOTOS = ["group_photos/opencv_group1.jpg", "broken/exif_rotated_face.jpg",
          "broken/truncated_half.jpg", "broken/not_an_image.jpg", "broken/png_named.jpg"]


def _index(settings: Settings, model: object, library: Path) -> dict[str, tuple]:  # type: ignore[type-arg]
    with Store.open(settings, model.info) as store, \
            Indexer(store, model, settings) as indexer:  # type: ignore[arg-type]
        summary = indexer.index([library])
        faces = store.faces()
        ids, vectors = store.embeddings()
        rows = {int(i): v for i, v in zip(ids, vectors, strict=True)}
        out: dict[str, tuple] = {}  # type: ignore[type-arg]
        for face in faces:
            name = Path(face.path).name
            out.setdefault(name, ([], []))
            out[name][0].append(tuple(round(v, 1) for v in face.bbox))
            out[name][1].append(rows[face.face_id])
    failures = sorted((Path(p).name, reason) for p, reason in summary.failures)
    return {"faces": out, "failures": failures}  # type: ignore[dict-item]


def test_worker_processes_give_what_one_process_gives(faces_dir: Path, settings: Settings,
                                                      tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    for rel in PHOTOS:
        shutil.copy2(faces_dir / rel, library / Path(rel).name)

    one = _index(replace(settings, home=tmp_path / "one"), SfaceModel(settings), library)
    parallel = ParallelModel("sface", settings, 2)
    try:
        two = _index(replace(settings, home=tmp_path / "two"), parallel, library)
        assert parallel._pool is not None  # the files did go to the workers
    finally:
        parallel.close()

    assert [name for name, _ in two["failures"]] == ["not_an_image.jpg", "truncated_half.jpg"]
    assert two["failures"] == one["failures"]
    assert len(one["faces"]["opencv_group1.jpg"][0]) >= 20
    assert sorted(two["faces"]) == sorted(one["faces"])
    for name, (boxes, vectors) in one["faces"].items():
        other_boxes, other_vectors = two["faces"][name]
        assert other_boxes == boxes, name
        assert np.abs(np.stack(other_vectors) - np.stack(vectors)).max() < 1e-5, name


def test_one_file_is_analysed_without_starting_processes(faces_dir: Path, settings: Settings,
                                                         tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy2(faces_dir / "broken" / "exif_rotated_face.jpg", library / "face.jpg")
    parallel = ParallelModel("sface", settings, 2)
    try:
        result = _index(settings, parallel, library)
        assert parallel._pool is None
    finally:
        parallel.close()
    assert len(result["faces"]["face.jpg"][1]) == 1  # type: ignore[index]
