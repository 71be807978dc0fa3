"""Cannot-link within a photo: the rules on small arrays, then on real photos (group photos and
collages of LFW portraits) through the CLI's index and recluster with every algorithm, online
assignment, and a hand `move`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from indexer import settings as settings_mod
from indexer.assign import Assigner
from indexer.clustering import ALGORITHMS, ClusterParams, cluster, reconcile
from indexer.clustering.constraints import enforce, violations
from indexer.clustering.refine import attach_outliers, merge_close_clusters
from indexer.pipeline import Indexer
from indexer.store import Store
from tests.conftest import lfw_identities, link_tree


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_enforce_keeps_the_face_nearest_the_medoid() -> None:
    rng = np.random.default_rng(1)
    base = _unit(rng.normal(size=16))
    x = _unit(base + rng.normal(scale=[[0.01], [0.01], [0.01], [0.2]], size=(4, 16)))
    labels = np.zeros(4, dtype=np.int64)
    photos = np.array([0, 1, 2, 2])  # faces 2 and 3 share a photo; 3 is the far one
    out, ejected = enforce(x, labels, photos)
    assert ejected == 1 and out.tolist() == [0, 0, 0, -1]
    assert violations(labels, photos) == 1 and violations(out, photos) == 0
    # A face the user fixed there stays, whatever its distance.
    out, _ = enforce(x, labels, photos, fixed=[3])
    assert out.tolist() == [0, 0, -1, 0]


def test_merge_and_attach_respect_photos() -> None:
    rng = np.random.default_rng(2)
    base = _unit(rng.normal(size=16))
    x = _unit(base + rng.normal(scale=0.01, size=(5, 16)))
    labels = np.array([0, 0, 1, 1, -1])
    photos = np.array([0, 1, 2, 0, 1])  # clusters 0 and 1 both hold a face of photo 0
    merged, n = merge_close_clusters(x, labels, 0.5)
    assert n == 1 and len(set(merged[:4].tolist())) == 1  # unconstrained: one cluster
    kept, n = merge_close_clusters(x, labels, 0.5, photos)
    assert n == 0 and kept.tolist() == labels.tolist()
    from indexer.clustering.knn import KnnConfig, build_knn

    knn = build_knn(x, 4, KnnConfig())
    attached, _ = attach_outliers(knn, labels, 0.5, photos, x)
    assert attached[4] == 1  # cluster 0 holds photo 1 already: the next nearest one


def test_every_algorithm_honours_photos_on_synthetic_people() -> None:
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(30, 64)))
    x = _unit(np.repeat(centres, 5, axis=0) + rng.normal(scale=0.02, size=(150, 64)))
    photos = np.arange(150)
    photos[1::5] = photos[0::5]  # each person's first two faces are in one photo
    for algorithm in ALGORITHMS:
        free = cluster(x, algorithm, ClusterParams())
        held = cluster(x, algorithm, ClusterParams(), groups=photos)
        assert violations(free.labels, photos) > 0, algorithm
        assert violations(held.labels, photos) == 0, algorithm


def test_reconcile_keeps_pins_and_what_the_user_put_beside_them() -> None:
    x = _unit(np.eye(4, dtype=np.float32) + 1.0)
    photos = np.array([7, 7, 8, 9])
    new = np.array([0, 0, 0, 0])
    prev = np.array([5, 5, 5, -1])  # face 1 was moved next to face 0 (same photo) by hand
    final, _ = reconcile(new, prev, [], {1: 5}, [], 6, vectors=x, groups=photos)
    assert final.tolist() == [5, 5, 5, 5]
    final, _ = reconcile(new, np.full(4, -1), [], {}, [], 6, vectors=x, groups=photos)
    assert violations(final, photos) == 0 and (final >= 0).sum() == 3


# ---------------------------------------------------------------- real photos
# The group photos small enough to index quickly (the two women are in 2007_007763).
GROUP_PHOTOS = ["dlib_voc_2007_007763.jpg", "dlib_voc_2008_001322.jpg", "dlib_voc_2008_002079.jpg",
                "dlib_voc_2008_002470.jpg", "dlib_voc_2008_002506.jpg", "dlib_voc_2008_004176.jpg",
                "dlib_voc_2008_007676.jpg", "deepface_selfie-many-people.jpg",
                "opencv_group2.jpg", "openface_longoria-cooper.jpg"]

def _collages(faces_dir: Path, dest: Path) -> dict[str, list[str]]:
    """Portraits of 2-4 different LFW people side by side; returns collage -> identities."""
    from PIL import Image

    people = lfw_identities(faces_dir, min_images=6, count=8)
    names = list(people)
    layouts = [names[0:2], names[2:5], names[4:8], [names[1], names[3]], names[5:7],
               [names[0], names[6], names[2]], [names[7], names[7]]]  # the last: one person twice
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, who in enumerate(layouts):
        tiles = [Image.open(people[n][(i + j) % 3]).convert("RGB") for j, n in enumerate(who)]
        sheet = Image.new("RGB", (250 * len(tiles), 250), "white")
        for j, tile in enumerate(tiles):
            sheet.paste(tile, (250 * j, 0))
        sheet.save(dest / f"collage_{i}.jpg", quality=92)
        out[f"collage_{i}.jpg"] = who
    # Each person's own portraits too, so the collage faces have people to join.
    link_tree([p for n in names for p in people[n][3:6]], dest / "portraits")
    return out


@pytest.fixture(scope="module")
def photo_home(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from cli.app import app

    root = tmp_path_factory.mktemp("cannot_link")
    link_tree([faces_dir / "group_photos" / n for n in GROUP_PHOTOS], root / "library" / "groups")
    _collages(faces_dir, root / "library" / "collages")
    result = CliRunner().invoke(app, ["index", "--model", "dlib", "--home", str(root / "home"),
                                      str(root / "library")])
    assert result.exit_code == 0, result.stderr
    return root / "home"


def _store(home: Path) -> Store:
    return Store.open(settings_mod.load({"home": home}), read_only=True)


def _same_photo_pairs(home: Path) -> list[tuple[int, str]]:
    with _store(home) as store:
        seen = Counter((f.cluster_id, f.image_id) for f in store.faces()
                       if f.cluster_id is not None)
        paths = {f.image_id: f.path for f in store.faces()}
    return [(c, paths[i]) for (c, i), n in seen.items() if n > 1]


def test_real_photos_would_break_the_rule_without_it(photo_home: Path) -> None:
    with _store(photo_home) as store:
        faces = store.faces()
        _, vectors = store.embeddings()
    photos = np.asarray([f.image_id for f in faces])
    many = Counter(photos.tolist())
    assert sum(n >= 2 for n in many.values()) >= 12  # group photos and collages
    params = ClusterParams()
    assert violations(cluster(vectors, "hdbscan", params).labels, photos) > 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_person_holds_two_faces_of_one_photo(cli, photo_home: Path,  # type: ignore[no-untyped-def]
                                                algorithm: str) -> None:
    report = json.loads(cli("recluster", "--home", str(photo_home), "--algorithm", algorithm,
                            "--json").stdout)
    assert report["clusters"] >= 5
    assert _same_photo_pairs(photo_home) == []


def test_a_hand_move_beside_another_face_of_its_photo_is_kept(
        cli, photo_home: Path) -> None:  # type: ignore[no-untyped-def]
    cli("recluster", "--home", str(photo_home))
    with _store(photo_home) as store:
        faces = store.faces()
    by_photo: dict[int, list] = {}
    for f in faces:
        by_photo.setdefault(f.image_id, []).append(f)
    a, b = next((fs[0], fs[1]) for fs in by_photo.values()
                if len(fs) >= 2 and fs[0].cluster_id is not None)
    cli("move", str(b.face_id), str(a.cluster_id), "--home", str(photo_home))
    cli("recluster", "--home", str(photo_home))
    with _store(photo_home) as store:
        after = {f.face_id: f.cluster_id for f in store.faces([a.face_id, b.face_id])}
    assert after == {a.face_id: a.cluster_id, b.face_id: a.cluster_id}
    assert [(c, p) for c, p in _same_photo_pairs(photo_home) if c != a.cluster_id] == []


def test_online_assignment_puts_a_photos_second_face_elsewhere(
        faces_dir: Path, dlib_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A collage of two photos of one known person: the nearer face joins them, the other goes
    to the next-best person or waits."""
    from PIL import Image

    from indexer.recluster import recluster

    people = lfw_identities(faces_dir, min_images=8, count=3)
    names = list(people)
    known = link_tree([p for n in names for p in people[n][:5]], tmp_path / "known")
    settings = settings_mod.load({"home": tmp_path / "online-home"})
    with Store.open(settings, dlib_model.info) as store:
        with Indexer(store, dlib_model, settings) as indexer:
            indexer.index([known[0].parent])
        recluster(store, settings)
        assigner = Assigner(store, settings)
        sheet = Image.new("RGB", (750, 250), "white")
        for j, src in enumerate([people[names[0]][5], people[names[0]][6], people[names[1]][5]]):
            sheet.paste(Image.open(src).convert("RGB"), (250 * j, 0))
        (tmp_path / "new").mkdir()
        sheet.save(tmp_path / "new" / "twice.jpg", quality=92)
        with Indexer(store, dlib_model, settings,
                     on_faces_added=assigner.on_faces_added) as indexer:
            indexer.index([tmp_path / "new"])
        faces = [f for f in store.faces() if f.path.endswith("twice.jpg")]
        largest = {Path(f.path).name: f for f in sorted(
            store.faces(), key=lambda f: (f.bbox[2] - f.bbox[0]))}  # LFW borders hold others
        (home_a,) = {largest[p.name].cluster_id for p in people[names[0]][:5]}
    assert len(faces) >= 3
    in_a = [f for f in faces if f.cluster_id == home_a]
    assert len(in_a) == 1, [(f.cluster_id, f.assign_reason) for f in faces]
    clusters = [f.cluster_id for f in faces if f.cluster_id is not None]
    assert len(clusters) == len(set(clusters))
    other = next(f for f in faces if f.cluster_id != home_a and f.bbox[0] < 500)
    assert "next-best" in (other.assign_reason or ""), other.assign_reason
