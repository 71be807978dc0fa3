"""`faceidx query`: who looks like this? Real LFW identities, the real dlib model."""

import json
from pathlib import Path

import pytest

from tests.conftest import lfw_identities, link_tree


@pytest.fixture(scope="module")
def lfw_built(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, dict[str, Path]]:
    """20 LFW identities with >= 6 photos: all but one indexed, one held back each."""
    from typer.testing import CliRunner

    from cli.app import app

    root = tmp_path_factory.mktemp("lfw")
    people = lfw_identities(faces_dir, min_images=6, count=20)
    held_back = {}
    indexed = []
    for name, files in people.items():
        held_back[name] = files[-1]
        indexed += files[:-1]
    link_tree(indexed, root / "library", base=faces_dir / "lfw")
    result = CliRunner().invoke(app, ["index", "--model", "dlib", "--home", str(root / "home"),
                                      str(root / "library")])
    assert result.exit_code == 0, result.stderr
    return root / "home", held_back


@pytest.fixture
def lfw_index(lfw_built: tuple[Path, dict[str, Path]], monkeypatch: pytest.MonkeyPatch
              ) -> dict[str, Path]:
    """The module's LFW index as this test's home (FACEIDX_HOME points at it)."""
    home, held_back = lfw_built
    monkeypatch.setenv("FACEIDX_HOME", str(home))
    return held_back


def _top1_identity(cli, image: Path) -> str:  # type: ignore[no-untyped-def]
    result = json.loads(cli("query", "--json", "--k", "3", str(image)).stdout)
    # LFW photos are centred on their subject: take the query face nearest the centre.
    face = min(result, key=lambda f: abs((f["bbox"][0] + f["bbox"][2]) / 2 - 125)
               + abs((f["bbox"][1] + f["bbox"][3]) / 2 - 125))
    return Path(face["matches"][0]["path"]).parent.name


def test_held_back_photos_find_their_identity(cli, lfw_index: dict[str, Path]
                                              ) -> None:  # type: ignore[no-untyped-def]
    right = [name for name, image in lfw_index.items() if _top1_identity(cli, image) == name]
    assert len(right) >= 19, f"top-1 right for {len(right)}/20: {sorted(right)}"


def test_faiss_file_deleted_or_truncated_is_rebuilt(
        cli, lfw_index: dict[str, Path], lfw_built) -> None:  # type: ignore[no-untyped-def]
    name, image = next(iter(lfw_index.items()))
    faiss_file = lfw_built[0] / "faces.faiss"
    faiss_file.unlink()
    assert _top1_identity(cli, image) == name
    assert faiss_file.exists()
    faiss_file.write_bytes(faiss_file.read_bytes()[: faiss_file.stat().st_size // 2])
    assert _top1_identity(cli, image) == name


def test_query_json_shape(cli, faces_dir: Path, lfw_index: dict[str, Path]
                          ) -> None:  # type: ignore[no-untyped-def]
    image = next(iter(lfw_index.values()))
    result = json.loads(cli("query", "--json", "--k", "2", str(image)).stdout)
    assert isinstance(result, list) and result
    match = result[0]["matches"][0]
    assert len(result[0]["bbox"]) == 4 and len(result[0]["matches"]) == 2
    assert {"face_id", "path", "bbox", "distance", "cluster_id", "person"} <= set(match)
    assert result[0]["matches"][0]["distance"] <= result[0]["matches"][1]["distance"]


def test_no_face_exits_1_and_bad_image_exits_2(cli, faces_dir: Path, lfw_index
                                               ) -> None:  # type: ignore[no-untyped-def]
    no_face = cli("query", str(faces_dir / "non_faces" / "clean" / "skimage_coffee.png"),
                  ok=False)
    assert no_face.exit_code == 1 and "no face found" in no_face.stderr
    missing = cli("query", str(faces_dir / "nope.jpg"), ok=False)
    assert missing.exit_code == 2 and "nope.jpg" in missing.stderr
    broken = cli("query", str(faces_dir / "broken" / "truncated_half.jpg"), ok=False)
    assert broken.exit_code == 2 and "truncated" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
