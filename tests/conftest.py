"""Shared fixtures: the real photos in ../shared/faces, an index home under tmp_path, one
session-scoped dlib model, and the Typer app driven through its test runner."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from indexer import settings as settings_mod
from indexer.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FACES_DIR = Path(os.environ.get("FACEIDX_TEST_FACES", REPO.parent / "shared" / "faces"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The read-only test photos; tests that need them skip when the folder is absent."""
    if not (FACES_DIR / "README.md").is_file():
        pytest.skip(f"real test photos not found at {FACES_DIR} (CI has them beside the repo "
                    "as ../shared/faces; set FACEIDX_TEST_FACES to point elsewhere)")
    return FACES_DIR


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own index home and no user config file."""
    home = tmp_path / "home"
    monkeypatch.setenv("FACEIDX_HOME", str(home))
    monkeypatch.setenv("FACEIDX_CONFIG", str(tmp_path / "no-config.toml"))
    for key in list(os.environ):
        if key.startswith("FACEIDX_") and key not in ("FACEIDX_HOME", "FACEIDX_CONFIG",
                                                       "FACEIDX_TEST_FACES"):
            monkeypatch.delenv(key)
    return home


@pytest.fixture
def home(_isolated_home: Path) -> Path:
    return _isolated_home


@pytest.fixture
def settings(home: Path) -> Settings:
    return settings_mod.load({"home": home})


@pytest.fixture(scope="session")
def dlib_model():  # type: ignore[no-untyped-def]
    """One loaded dlib model for the whole session (its settings are the defaults)."""
    from indexer.models.dlib_model import DlibModel

    model = DlibModel(settings_mod.load({"home": Path("/nonexistent")}, environ={}))
    model.load()
    return model


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(runner: CliRunner):  # type: ignore[no-untyped-def]
    """Invoke the real Typer app: cli("index", "--model", "dlib", str(folder))."""
    from cli.app import app

    def invoke(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
        result = runner.invoke(app, list(args))
        if ok and result.exit_code != 0:
            raise AssertionError(f"faceidx {' '.join(args)} exited {result.exit_code}:\n"
                                 f"{result.stdout}\n{result.stderr}\n{result.exception!r}")
        return result

    return invoke


def link_tree(files: list[Path], dest: Path, base: Path | None = None) -> list[Path]:
    """Symlink-free test folders: hard-link (or copy) photos into `dest` under tmp_path."""
    import shutil

    out = []
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        rel = f.relative_to(base) if base else Path(f.name)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
        out.append(target)
    return out


def lfw_identities(faces_dir: Path, min_images: int, count: int) -> dict[str, list[Path]]:
    """`count` LFW identities with at least `min_images` photos, in a fixed order."""
    people: dict[str, list[Path]] = {}
    with (faces_dir / "index.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["dataset"] == "lfw":
                people.setdefault(row["identity"], []).append(faces_dir / row["file"])
    chosen = sorted((n for n, fs in people.items() if len(fs) >= min_images))[:count]
    return {n: sorted(people[n]) for n in chosen}


@pytest.fixture
def copy_photos(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    def copy(files: list[Path], name: str = "photos", base: Path | None = None) -> list[Path]:
        return link_tree(files, tmp_path / name, base)

    yield copy


@pytest.fixture(scope="session")
def celeb_built(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, Path]:
    """The five_celebrity train_ photos indexed with dlib and reclustered once, for the whole
    session (tests copy it: see `celeb`); val_ photos held back. Returns (home, photo root)."""
    from cli.app import app

    root = tmp_path_factory.mktemp("celeb")
    source = faces_dir / "five_celebrity"
    link_tree(sorted(source.glob("*/train_*")), root / "library", base=source)
    link_tree(sorted(source.glob("*/val_*")), root / "later", base=source)
    for args in (["index", "--model", "dlib", str(root / "library")], ["recluster"]):
        result = CliRunner().invoke(app, [*args, "--home", str(root / "home")])
        assert result.exit_code == 0, result.stderr
    return root / "home", root


@pytest.fixture
def celeb(celeb_built: tuple[Path, Path], home: Path) -> Path:
    """A private copy of the built index as this test's home; returns the photo root."""
    import shutil

    shutil.copytree(celeb_built[0], home)
    return celeb_built[1]
