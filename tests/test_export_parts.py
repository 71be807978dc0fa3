"""Export's parts without the CLI: the tree view, names, the streaming photo pass, metrics and
the output folder rules. Fast: synthetic data and two real photos."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from indexer.errors import FaceidxError
from indexer.export import images, outdir
from indexer.export.data import ExportData, folder_name
from indexer.export.metrics import scores
from indexer.export.progress import NoProgress
from indexer.export.tree import cluster_nodes, coarsen, recondense
from indexer.store import StoredFace
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


def test_folder_names_are_safe_and_carry_the_name() -> None:
    assert folder_name(7, None) == "cluster_7"
    assert folder_name(7, "Mindy Kaling") == "7_Mindy_Kaling"
    risky = folder_name(3, "../Ann/Marie: Ø")
    assert "/" not in risky and ".." not in risky and risky.startswith("3_") and "Ø" in risky


def _face(face_id: int, image_id: int, path: Path, bbox: tuple) -> StoredFace:
    return StoredFace(face_id=face_id, image_id=image_id, path=str(path), bbox=bbox,
                      landmarks=(), score=1.0, cluster_id=None, assign_distance=None,
                      assign_reason=None)


def test_each_photo_is_decoded_once_and_a_missing_one_is_skipped(
        faces_dir: Path, settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a = faces_dir / "group_photos" / "fr_two_people.jpg"
    b = faces_dir / "five_celebrity" / "madonna" / "train_1.jpg"
    faces = [_face(1, 1, a, (10, 10, 90, 100)), _face(2, 1, a, (300, 50, 380, 140)),
             _face(3, 2, b, (-20, -20, 60, 60)),  # a box over the photo's edge
             _face(4, 3, tmp_path / "gone.jpg", (0, 0, 10, 10))]
    calls: list[str] = []
    real = images.decode

    def counting(path: Path, **kw):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(images, "decode", counting)
    with caplog.at_level(logging.WARNING), images.render(
            faces, {1, 3, 4}, tmp_path / "crops", settings, 112, NoProgress()) as thumbs:
        assert sorted(calls) == sorted({str(a), str(b), str(tmp_path / "gone.jpg")})
        assert thumbs[1].shape == (112, 112, 3) and thumbs[1].std() > 10
        assert thumbs[3].std() > 10
        assert thumbs.missing == {4} and (thumbs[4] == images.MISSING_GREY).all()
        assert thumbs.crops_written == 3
    assert "gone.jpg" in caplog.text
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == \
        ["face_1.jpg", "face_2.jpg", "face_3.jpg"]


def _data(n_clusters: int, per: int) -> ExportData:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(n_clusters, 16))
    vectors = np.concatenate([c + 0.1 * rng.normal(size=(per, 16)) for c in centres])
    labels = np.repeat(np.arange(1, n_clusters + 1), per)
    labels[:3] = -1
    return ExportData(faces=[], vectors=vectors.astype(np.float32), labels=labels,
                      distances=np.zeros(len(labels)), clusters=[],
                      model=ModelInfo("dlib", 16, "x"), images_with_faces=0,
                      last_recluster=None, last_eval=None, condensed_tree=None)


def test_scores_sample_silhouette_with_a_fixed_seed_and_say_so() -> None:
    data = _data(6, 40)
    full = scores(data, silhouette_max=10_000, seed=0)
    sampled = scores(data, silhouette_max=50, seed=0)
    assert full["silhouette_sampled"] is None and full["faces_scored"] == 237
    assert sampled["silhouette_sampled"] == 50
    assert sampled == scores(data, silhouette_max=50, seed=0)
    assert full["silhouette"] > 0.8 and full["davies_bouldin"] < 0.5
    assert sampled["davies_bouldin"] == full["davies_bouldin"]  # computed on every face


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
