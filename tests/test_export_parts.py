"""Export's parts without the CLI: the tree view, names, grid cells from the crop cache, the
streamed metrics, grid choice, paging on a synthetic home and the output folder rules. Fast:
synthetic data and two real photos."""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer import crops as crops_mod
from indexer.crops import crop_path
from indexer.errors import FaceidxError
from indexer.export import folders as folders_mod
from indexer.export import images, outdir
from indexer.export import metrics as metrics_mod
from indexer.export.data import ClusterInfo, ExportData, folder_name
from indexer.export.folders import groups, spread
from indexer.export.grids import write_png
from indexer.export.metrics import scores
from indexer.export.progress import NoProgress
from indexer.export.tree import cluster_nodes, coarsen, recondense, split_sizes, view_nodes
from indexer.store import StoredFace
from indexer.store.bulkrows import BrowseFace
from indexer.types import ModelInfo


def _tree(seed: int = 0) -> tuple[np.ndarray, int]:
    import hdbscan

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, 8)) * 6
    x = np.concatenate([c + rng.normal(size=(int(rng.integers(2, 12)), 8)) for c in centres])
    return hdbscan.HDBSCAN(min_cluster_size=2).fit(x).condensed_tree_.to_numpy(), len(x)


def test_coarse_tree_keeps_every_face_once_and_fewer_branches() -> None:
    tree, n = _tree()
    assert cluster_nodes(tree) > 40
    view, min_size = coarsen(tree, 40)
    assert min_size > 2 and cluster_nodes(view) <= 40
    points = view["child"][view["child_size"] == 1]
    assert sorted(points.tolist()) == list(range(n))
    # a split survives only when both branches are big enough
    splits = view[view["child_size"] > 1]
    assert (splits["child_size"] >= min_size).all()
    assert cluster_nodes(recondense(tree, 2)) == cluster_nodes(tree)
    same, unchanged = coarsen(tree, cluster_nodes(tree))
    assert unchanged == 0 and same is tree


def test_view_nodes_counts_what_recondense_builds() -> None:
    tree, _ = _tree(1)
    second, third = split_sizes(tree)
    for size in np.unique(tree["child_size"][tree["child_size"] > 1]).tolist() + [10_000]:
        assert view_nodes(second, third, size) == cluster_nodes(recondense(tree, size)), size


def test_write_png_round_trips_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    pixels[10:20] = 255  # flat rows, as in a grid's margins
    write_png(Image.fromarray(pixels), tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (53, 37)
        assert (np.asarray(img) == pixels).all()


def test_folder_names_are_safe_and_carry_the_name() -> None:
    assert folder_name(7, None) == "cluster_7"
    assert folder_name(7, "Mindy Kaling") == "7_Mindy_Kaling"
    risky = folder_name(3, "../Ann/Marie: Ø")
    assert "/" not in risky and ".." not in risky and risky.startswith("3_") and "Ø" in risky


def _source(face_id: int, image_id: int, path: Path, bbox: tuple) -> BrowseFace:
    data = path.read_bytes() if path.exists() else b""
    return BrowseFace(face_id=face_id, image_id=image_id, path=str(path), bbox=bbox,
                      cluster_id=None, person=None, assign_distance=None, assign_reason=None,
                      content_hash=hashlib.blake2b(data, digest_size=20).hexdigest())


def test_grid_cells_come_from_the_crop_cache_made_once(
        faces_dir: Path, settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a = faces_dir / "group_photos" / "fr_two_people.jpg"
    faces = [_source(1, 1, a, (10, 10, 90, 100)), _source(2, 1, a, (300, 50, 380, 140)),
             _source(3, 3, tmp_path / "gone.jpg", (0, 0, 10, 10)),
             BrowseFace(face_id=4, image_id=4, path="synthetic://seed0/1.jpg",
                        bbox=(0, 0, 10, 10), cluster_id=None, person=None,
                        assign_distance=None, assign_reason=None, content_hash="x")]
    decoded: list[str] = []
    real = crops_mod.decode_raw

    def counting(raw, **kw):  # type: ignore[no-untyped-def]
        decoded.append(str(raw.path))
        return real(raw, **kw)

    monkeypatch.setattr(crops_mod, "decode_raw", counting)
    cells = images.CropCells(settings, 112)
    with caplog.at_level(logging.WARNING):
        first = cells.cells(faces)
    assert decoded == [str(a)]  # one decode for both faces of the photo
    assert all(c.shape == (112, 112, 3) for c in first)
    assert first[0].std() > 10 and first[1].std() > 10
    assert not np.array_equal(first[0], first[1])
    assert (first[2] == cells.placeholder).all() and (first[3] == cells.placeholder).all()
    assert cells.counts.made == 2 and cells.counts.unreadable == 1
    assert cells.counts.synthetic == 1 and cells.counts.unreadable_photos == {3}
    assert "gone.jpg" in caplog.text
    assert crop_path(settings.home, faces[0]).is_file()  # cached for the web app too
    again = images.CropCells(settings, 112)
    second = again.cells(faces[:2])
    assert decoded == [str(a)] and again.counts.cached == 2  # read back, not decoded
    assert np.abs(second[0].astype(int) - first[0].astype(int)).mean() < 1


def test_box_crops_decode_each_photo_once(faces_dir: Path, settings, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    a = faces_dir / "group_photos" / "fr_two_people.jpg"
    b = faces_dir / "five_celebrity" / "madonna" / "train_1.jpg"
    rows = [(1, 1, a, (10, 10, 90, 100)), (2, 1, a, (300, 50, 380, 140)),
            (3, 2, b, (-20, -20, 60, 60)),  # a box over the photo's edge
            (4, 3, tmp_path / "gone.jpg", (0, 0, 10, 10))]
    sources = images.FaceSources(np.asarray([r[0] for r in rows]))
    sources.capture([StoredFace(face_id=f, image_id=i, path=str(p), bbox=box, landmarks=(),
                                score=1.0, cluster_id=None, assign_distance=None,
                                assign_reason=None) for f, i, p, box in rows],
                    [None] * len(rows))
    calls: list[str] = []
    real = images.decode

    def counting(path: Path, **kw):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(images, "decode", counting)
    written, unreadable = images.write_box_crops(sources, tmp_path / "crops", settings,
                                                 NoProgress())
    assert sorted(calls) == sorted({str(a), str(b), str(tmp_path / "gone.jpg")})
    assert written == 3 and unreadable == {3}
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == \
        ["face_1.jpg", "face_2.jpg", "face_3.jpg"]


def _data(n_clusters: int, per: int) -> ExportData:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(n_clusters, 16))
    vectors = np.concatenate([c + 0.1 * rng.normal(size=(per, 16)) for c in centres])
    labels = np.repeat(np.arange(1, n_clusters + 1), per)
    labels[:3] = -1
    n = len(labels)
    return ExportData(face_ids=np.arange(1, n + 1), image_ids=np.arange(1, n + 1),
                      vectors=vectors.astype(np.float32), labels=labels,
                      distances=np.zeros(n), clusters=[], model=ModelInfo("dlib", 16, "x"),
                      images_with_faces=0, last_recluster=None, last_eval=None,
                      condensed_tree=None)


def test_scores_sample_silhouette_with_a_fixed_seed_and_say_so() -> None:
    data = _data(6, 40)
    full = scores(data, silhouette_max=10_000, seed=0)
    sampled = scores(data, silhouette_max=50, seed=0)
    assert full["silhouette_sampled"] is None and full["faces_scored"] == 237
    assert sampled["silhouette_sampled"] == 50
    assert sampled == scores(data, silhouette_max=50, seed=0)
    assert full["silhouette"] > 0.8 and full["davies_bouldin"] < 0.5
    assert sampled["davies_bouldin"] == full["davies_bouldin"]  # computed on every face


def test_streamed_scores_equal_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    data = _data(30, 7)
    rows = data.labels != -1
    x, labels = data.vectors[rows].astype(np.float64), data.labels[rows]
    monkeypatch.setattr(metrics_mod, "CHUNK", 16)  # many blocks
    got = scores(data, silhouette_max=10_000, seed=0)
    assert got["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, labels),
                                                     rel=1e-6)
    assert got["davies_bouldin"] == pytest.approx(davies_bouldin_score(x, labels), abs=1e-6)
    assert got["davies_bouldin_clusters_sampled"] is None
    few = scores(data, silhouette_max=10_000, seed=0, davies_bouldin_max=10)
    assert few["davies_bouldin_clusters_sampled"] == 10
    assert few["davies_bouldin"] == pytest.approx(got["davies_bouldin"], rel=0.5)


def test_a_big_cluster_grid_is_its_medoid_then_a_spread() -> None:
    n = 200
    data = ExportData(face_ids=np.arange(10, 10 + n), image_ids=np.arange(n),
                      vectors=np.zeros((n, 4), np.float32), labels=np.full(n, 5),
                      distances=np.random.default_rng(0).random(n),
                      clusters=[ClusterInfo(5, None, n, 77, "cluster_5")],
                      model=ModelInfo("dlib", 4, "x"), images_with_faces=n,
                      last_recluster=None, last_eval=None, condensed_tree=None)
    (group,) = groups(data, 64)
    assert len(group.rows) == 64 and data.face_ids[group.rows[0]] == 77
    d = data.distances[group.rows[1:]]
    others = np.delete(data.distances, 77 - 10)
    assert (np.diff(d) >= 0).all() and d[0] == others.min() and d[-1] == others.max()
    assert len(set(group.rows.tolist())) == 64 and "spread" in group.note
    assert spread(5, 8).tolist() == [0, 1, 2, 3, 4]


def test_a_synthetic_home_exports_paged_with_placeholder_cells(
        settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import indexer.export as export_mod
    from indexer.synthetic_home import build

    build(settings, 700, "dlib", named=2)
    catalog = settings.catalog_path.read_bytes()
    monkeypatch.setattr(export_mod, "PAGE", 64)  # many pages
    quick = {"tsne_max_points": 100}  # t-SNE is not what this test is about
    paged = export_mod.export_index(settings, tmp_path / "paged",
                                    export_mod.ExportOptions(**quick))
    monkeypatch.setattr(export_mod, "PAGE", 100_000)
    monkeypatch.setattr(folders_mod, "GRID_CHUNK", 16)  # two processes draw, during the plots
    whole = export_mod.export_index(settings, tmp_path / "whole",
                                    export_mod.ExportOptions(grid_workers=2, **quick))
    assert settings.catalog_path.read_bytes() == catalog
    assert paged.grid_faces == whole.grid_faces > 0
    assert paged.placeholder_cells == paged.grid_faces and paged.cells_made == 0
    assert paged.unreadable_photos == 0 and paged.links == 0 and not paged.warnings
    for name in ("clusters.csv", "outliers.csv", "faces.csv", "people.csv", "metrics.json"):
        assert (tmp_path / "paged" / name).read_bytes() == \
            (tmp_path / "whole" / name).read_bytes(), name
    lines = (tmp_path / "paged" / "clusters.csv").read_text().splitlines()
    assert len(lines) == 701 and [int(r.split(",")[1]) for r in lines[1:]] == \
        sorted(int(r.split(",")[1]) for r in lines[1:])
    assert not (settings.home / "crops").exists()  # nothing to crop, nothing cached
    for report, name in ((paged, "paged"), (whole, "whole")):
        grids = sorted((tmp_path / name).glob("*/thumbnail_grid.png"))
        assert len(grids) == report.folders > 16


def test_output_folder_rules(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FaceidxError, match="not a folder"):
        outdir.prepare(a_file, ["clusters.csv"], force=True)
    out = tmp_path / "out"
    outdir.prepare(out, ["clusters.csv", "cluster_1"], force=False)  # new folder is fine
    (out / "cluster_1").mkdir()
    (out / "clusters.csv").write_text("old")
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FaceidxError, match="--force"):
        outdir.prepare(out, ["clusters.csv"], force=False)
    outdir.prepare(out, ["clusters.csv", "cluster_2"], force=True)
    assert sorted(p.name for p in out.iterdir()) == [outdir.MANIFEST, "keep.txt"]
    assert json.loads((out / outdir.MANIFEST).read_text())["entries"][:2] == \
        ["cluster_2", "clusters.csv"]
    with pytest.raises(FaceidxError, match="not written by faceidx"):
        outdir.prepare(out, ["keep.txt"], force=True)
