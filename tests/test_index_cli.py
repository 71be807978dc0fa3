"""`faceidx index` end to end: the real Typer app, the real dlib model, real photos."""

import csv
import json
import shutil
from pathlib import Path

from indexer import settings as settings_mod
from indexer.store import Store
from indexer.store.vectors import persisted_ids


def _summary(result) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(result.stdout)


def _store(home: Path) -> Store:
    return Store.open(settings_mod.load({"home": home}), read_only=True)


def test_index_twice_then_move_then_delete(cli, faces_dir: Path, copy_photos, home: Path
                                           ) -> None:  # type: ignore[no-untyped-def]
    people = sorted((faces_dir / "lfw" / "Adrien_Brody").glob("*.jpg"))[:4]
    files = copy_photos(people)
    folder = files[0].parent

    first = _summary(cli("index", "--model", "dlib", "--json", str(folder)))
    assert first["new"] == 4 and first["failed"] == 0 and first["faces_added"] >= 4

    second = _summary(cli("index", "--json", str(folder)))
    assert second["unchanged"] == 4
    assert second["new"] == second["faces_added"] == second["changed"] == 0

    with _store(home) as store:
        image = store.images_at([str(files[0])])[str(files[0])]
        ids_before = store.face_ids_of_image(image.image_id)
    moved = folder / "sub" / "renamed.jpg"
    moved.parent.mkdir()
    shutil.move(files[0], moved)
    third = _summary(cli("index", "--json", str(folder)))
    assert third["moved"] == 1 and third["faces_added"] == 0 and third["removed"] == 0
    with _store(home) as store:
        assert store.images_at([str(files[0])]) == {}
        moved_rec = store.images_at([str(moved)])[str(moved)]
        assert moved_rec.image_id == image.image_id
        assert store.face_ids_of_image(moved_rec.image_id) == ids_before

    moved.unlink()
    fourth = _summary(cli("index", "--json", str(folder)))
    assert fourth["removed"] == 1 and fourth["faces_removed"] == len(ids_before)
    with _store(home) as store:
        remaining = {f.face_id for f in store.faces()}
        assert remaining.isdisjoint(ids_before)
    in_faiss = set(persisted_ids(home / "faces.faiss", 128).tolist())
    assert in_faiss == remaining


def test_changed_file_is_re_embedded_and_copy_reuses_vectors(
        cli, faces_dir: Path, copy_photos, home: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = sorted((faces_dir / "lfw" / "Al_Gore").glob("*.jpg"))[:2]
    (target,) = copy_photos([a])
    cli("index", "--model", "dlib", str(target.parent))
    shutil.copy2(target, target.parent / "copy.jpg")
    copied = _summary(cli("index", "--json", str(target.parent)))
    assert copied["copied"] == 1 and copied["faces_added"] >= 1 and copied["new"] == 0
    shutil.copyfile(b, target)  # new content at the same path
    changed = _summary(cli("index", "--json", str(target.parent)))
    assert changed["changed"] == 1 and changed["faces_added"] >= 1


def test_broken_files_are_recorded_and_do_not_stop_the_run(
        cli, faces_dir: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("index", "--model", "dlib", "--json", str(faces_dir / "broken"))
    summary = _summary(result)
    assert summary["failed"] == 4 and summary["new"] == 6
    with _store(home) as store:
        per_image = {}
        for face in store.faces():
            per_image[Path(face.path).name] = per_image.get(Path(face.path).name, 0) + 1
        failures = {Path(p).name: reason for p, reason in store.failures()}
    assert per_image == {name: 1 for name in [
        "png_named.jpg", "cmyk.jpg", "gray16.png", "palette.gif", "rgba.png",
        "exif_rotated_face.jpg"]}
    assert set(failures) == {"zero_bytes.jpg", "truncated_half.jpg", "not_an_image.jpg",
                             "bomb_40000x40000.png"}
    assert "decompression bomb" in failures["bomb_40000x40000.png"]
    status = json.loads(cli("status", "--json", "--failures").stdout)
    assert status["failed"] == 4 and len(status["failures"]) == 4
    again = _summary(cli("index", "--json", str(faces_dir / "broken")))
    assert again["failed"] == 0 and again["unchanged"] == 10  # not retried until they change


def test_group_photos_find_at_least_the_expected_faces(
        cli, faces_dir: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    folder = faces_dir / "group_photos"
    cli("index", "--model", "dlib", str(folder))
    with _store(home) as store:
        counts: dict[str, int] = {}
        for face in store.faces():
            counts[Path(face.path).name] = counts.get(Path(face.path).name, 0) + 1
    with (folder / "labels.csv").open() as fh:
        exact = {r["file"]: int(r["expected_faces"]) for r in csv.DictReader(fh)
                 if r["expected_faces"].isdigit()}
    enough = [name for name, n in exact.items() if counts.get(name, 0) >= n]
    assert len(exact) >= 10
    assert len(enough) >= 0.8 * len(exact), {n: (counts.get(n, 0), e) for n, e in exact.items()}


def test_status_json_and_model_mismatch(cli, faces_dir: Path, copy_photos
                                        ) -> None:  # type: ignore[no-untyped-def]
    files = copy_photos(sorted((faces_dir / "lfw" / "Al_Gore").glob("*.jpg"))[:2])
    cli("index", "--model", "dlib", str(files[0].parent))
    status = json.loads(cli("status", "--json").stdout)
    assert {"images", "faces", "clusters", "failed", "model"} <= set(status)
    assert status["images"] == 2 and status["faces"] >= 2 and status["model"]["name"] == "dlib"
    wrong = cli("index", "--model", "facenet", str(files[0].parent), ok=False)
    assert wrong.exit_code == 2
    assert "made by model dlib" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def test_missing_folder_and_empty_home_are_one_line_errors(cli, tmp_path: Path
                                                            ) -> None:  # type: ignore[no-untyped-def]
    result = cli("index", "--model", "dlib", str(tmp_path / "nope"), ok=False)
    assert result.exit_code == 2 and "no such file or folder" in result.stderr
    result = cli("status", ok=False)
    assert result.exit_code == 2 and "no index at" in result.stderr
    assert "Traceback" not in result.stderr
