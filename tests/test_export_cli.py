"""`faceidx export` on a real index: five_celebrity, a few group photos, and one photo stored
twice under the same file name; reclustered, one person named, exported once per module."""

import csv
import hashlib
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer import settings as settings_mod
from indexer.export.folders import GRID_FILE
from indexer.export.grids import grid_size
from indexer.export.plots import FIGURES
from indexer.store import Store
from tests.conftest import link_tree

GROUP_PHOTOS = ["fr_two_people.jpg", "fr_kit_with_rose.jpg", "deepface_couple.jpg"]
NAME = "Mindy Kaling"


def _run(*args: str) -> str:
    from typer.testing import CliRunner

    from cli.app import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


@pytest.fixture(scope="module")
def built(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("export")
    library, home = root / "library", root / "home"
    celeb = faces_dir / "five_celebrity"
    link_tree(sorted(celeb.glob("*/*.jpg")), library / "celebs", base=celeb)
    link_tree([faces_dir / "group_photos" / n for n in GROUP_PHOTOS], library / "groups")
    same = celeb / "madonna" / "train_1.jpg"
    for folder in ("a", "b"):  # two photos called IMG_0001.jpg in different folders
        (library / "dupes" / folder).mkdir(parents=True)
        shutil.copy2(same, library / "dupes" / folder / "IMG_0001.jpg")
    _run("index", "--model", "dlib", "--home", str(home), str(library))
    _run("recluster", "--home", str(home))
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        mindy = Counter(f.cluster_id for f in store.faces()
                        if "/mindy_kaling/" in f.path).most_common(1)[0][0]
    _run("name", str(mindy), NAME, "--home", str(home))
    catalog_before = _digest(home / "catalog.duckdb")
    out = root / "out"
    report = json.loads(_run("export", str(out), "--crops", "--json", "--home", str(home)))
    return {"home": home, "out": out, "root": root, "report": report, "mindy": mindy,
            "catalog_before": catalog_before, "library": library}


@pytest.fixture(scope="module")
def catalog(built: dict):  # type: ignore[no-untyped-def]
    with Store.open(settings_mod.load({"home": built["home"]}), read_only=True) as store:
        return store.faces(), store.people(), store.cluster_names()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_every_file_exists_and_each_png_has_its_size(built: dict, catalog) -> None:
    out = built["out"]
    for name in ("clusters.csv", "outliers.csv", "faces.csv", "people.csv", "metrics.json"):
        assert (out / name).is_file(), name
    for name, size in FIGURES.items():  # the index was clustered by HDBSCAN: all four plots
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size == size, name
    faces, people, _ = catalog
    folders = {int(r["cluster_id"]): r["folder"] for r in _rows(out / "people.csv")}
    assert set(folders) == {p.cluster_id for p in people}
    for person in people:
        folder = out / folders[person.cluster_id]
        with Image.open(folder / GRID_FILE) as img:
            assert img.size == grid_size(min(person.size, 64), 8, 112), folder.name
    assert built["report"]["crops"] == len(faces)
    first = faces[0]
    with Image.open(out / "crops" / f"face_{first.face_id}.jpg") as crop:
        x1, y1, x2, y2 = first.bbox
        assert abs(crop.size[0] - (x2 - x1)) <= 1 and abs(crop.size[1] - (y2 - y1)) <= 1


def test_csv_rows_match_the_catalog(built: dict, catalog) -> None:
    faces, _, names = catalog
    rows = _rows(built["out"] / "clusters.csv")
    assert [int(r["face_id"]) for r in rows] == [f.face_id for f in faces]  # by face id
    for row, face in zip(rows, faces, strict=True):
        assert row["image_path"] == face.path
        assert [float(row[k]) for k in ("x1", "y1", "x2", "y2")] == \
            pytest.approx(face.bbox, abs=0.01)
        assert int(row["cluster_id"]) == (-1 if face.cluster_id is None else face.cluster_id)
        assert row["person"] == names.get(face.cluster_id, "")
        if face.cluster_id is None:
            assert row["distance"] == ""
        elif face.assign_distance is not None:
            assert float(row["distance"]) == pytest.approx(face.assign_distance, abs=1e-4)
    assert sum(r["person"] == NAME for r in rows) >= 15
    outliers = _rows(built["out"] / "outliers.csv")
    assert outliers == [r for r in rows if r["cluster_id"] == "-1"]
    assert len(outliers) == sum(f.cluster_id is None for f in faces)
    boxes = _rows(built["out"] / "faces.csv")
    assert [int(r["face_id"]) for r in boxes] == [f.face_id for f in faces]
    for row, face in zip(boxes, faces, strict=True):
        marks = [float(row[f"landmark{i}_{a}"]) for i in range(1, 6) for a in "xy"]
        assert marks == pytest.approx(face.landmarks, abs=0.01)


def test_folders_hold_resolving_links_and_names(built: dict, catalog) -> None:
    faces, people, _ = catalog
    out = built["out"]
    named = out / f"{built['mindy']}_Mindy_Kaling"
    assert named.is_dir(), sorted(p.name for p in out.iterdir())
    images_of: dict[int, set[str]] = {}
    for f in faces:
        images_of.setdefault(-1 if f.cluster_id is None else f.cluster_id, set()).add(f.path)
    for person in people:
        folder = named if person.cluster_id == built["mindy"] else \
            out / f"cluster_{person.cluster_id}"
        links = [p for p in folder.iterdir() if p.name != GRID_FILE]
        assert all(p.is_symlink() and p.exists() for p in links), folder
        assert {os.path.realpath(p) for p in links} == \
            {os.path.realpath(p) for p in images_of[person.cluster_id]}
    outliers = out / "outliers"
    assert outliers.is_dir() == (-1 in images_of)
    dupes = [p for p in out.glob("*/*_IMG_0001.jpg")]
    assert len(dupes) == 2 and len({p.name for p in dupes}) == 2
    assert {os.path.realpath(p) for p in dupes} == \
        {str(built["library"] / "dupes" / d / "IMG_0001.jpg") for d in "ab"}


def test_metrics_json(built: dict, catalog) -> None:
    faces, people, _ = catalog
    metrics = json.loads((built["out"] / "metrics.json").read_text())
    assert metrics["faces"] == len(faces)
    assert metrics["clusters"] == len(people)
    assert metrics["outliers"] == sum(f.cluster_id is None for f in faces)
    assert metrics["named_people"] == 1
    scores = metrics["scores"]
    assert -1 <= scores["silhouette"] <= 1 and scores["silhouette"] > 0.05
    assert scores["davies_bouldin"] > 0 and scores["calinski_harabasz"] > 0
    assert scores["silhouette_sampled"] is None  # small index: every face scored
    assert metrics["last_recluster"]["algorithm"] == "hdbscan"
    assert metrics["eval"] is None


def test_read_only_and_reproducible_with_hardlinks(built: dict, catalog) -> None:
    assert _digest(built["home"] / "catalog.duckdb") == built["catalog_before"]
    again = built["root"] / "again"
    _run("export", str(again), "--link", "hardlink", "--home", str(built["home"]))
    for name in ("clusters.csv", "outliers.csv", "faces.csv", "people.csv", "metrics.json"):
        assert (again / name).read_bytes() == (built["out"] / name).read_bytes(), name
    assert not (again / "crops").exists()
    photo = next(p for p in (again / f"{built['mindy']}_Mindy_Kaling").iterdir()
                 if p.name != GRID_FILE)
    assert not photo.is_symlink()
    image_id = int(photo.name.split("_", 1)[0])
    source = next(f.path for f in catalog[0] if f.image_id == image_id)
    assert photo.stat().st_ino == Path(source).stat().st_ino


def test_refuses_a_used_folder_and_force_replaces_only_its_own(built: dict, cli) -> None:
    out = built["root"] / "used"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = cli("export", str(out), "--home", str(built["home"]), ok=False)
    assert refused.exit_code != 0 and "--force" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "cluster_99999").mkdir()  # as if an earlier export had written it
    (out / ".faceidx-export.json").write_text(json.dumps({"entries": ["cluster_99999"]}))
    cli("export", str(out), "--force", "--link", "copy", "--home", str(built["home"]))
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "cluster_99999").exists()
    grid_folders = [p for p in out.iterdir() if (p / GRID_FILE).exists()]
    assert len(grid_folders) >= 5
    photos = [p for p in grid_folders[0].iterdir() if p.name != GRID_FILE]
    assert photos and all(p.is_file() and not p.is_symlink() for p in photos)


def test_never_reclustered_index_exports_all_as_outliers(faces_dir: Path, cli, copy_photos,
                                                         tmp_path: Path) -> None:
    photos = copy_photos(sorted((faces_dir / "five_celebrity" / "madonna").glob("*.jpg"))[:3])
    cli("index", "--model", "dlib", str(photos[0].parent))
    result = cli("export", str(tmp_path / "out"))
    assert "never been reclustered" in result.stderr and "faceidx recluster" in result.stderr
    out = tmp_path / "out"
    rows = _rows(out / "clusters.csv")
    assert rows and all(r["cluster_id"] == "-1" and r["distance"] == "" for r in rows)
    assert _rows(out / "outliers.csv") == rows
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["outliers"]
    assert not (out / "condensed_tree.png").exists()
    for name in ("viz_3d.png", "viz_tsne.png", "cluster_sizes.png"):
        with Image.open(out / name) as img:
            assert img.size == FIGURES[name]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clusters"] == 0 and metrics["outliers"] == len(rows)
    assert "recluster" in metrics["note"] and metrics["scores"]["silhouette"] is None
    with Image.open(out / "outliers" / GRID_FILE) as grid:
        pixels = np.asarray(grid)
    assert pixels.std() > 20 and not math.isnan(float(pixels.mean()))  # faces, not blank


def test_no_index_is_a_one_line_error(cli, tmp_path: Path) -> None:
    result = cli("export", str(tmp_path / "out"), ok=False)
    assert result.exit_code != 0 and "no index" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_eval_metrics_appear_after_an_eval_run(built: dict, cli, tmp_path: Path) -> None:
    home = tmp_path / "evalhome"  # a copy: eval reclusters, the module's index stays as it is
    shutil.copytree(built["home"], home)
    cli("eval", str(built["library"] / "celebs"), "--algorithm", "hdbscan", "--home", str(home))
    cli("export", str(tmp_path / "out"), "--home", str(home))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    hdbscan = metrics["eval"]["hdbscan"]
    assert hdbscan["n_identities"] == 5 and 0.8 < hdbscan["bcubed_f1"] <= 1.0
    assert 0 < hdbscan["nmi"] <= 1
