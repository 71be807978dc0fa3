"""Fixtures for the web app: one real dlib index of real photos, built once per session and
copied for each test that changes it, and the app over it through the ASGI test client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from indexer import settings as settings_mod
from indexer.settings import Settings
from tests.conftest import link_tree

TOKEN = "test-token-0123456789"
HOST = "127.0.0.1"
PORT = 8765
BASE_URL = f"http://{HOST}:{PORT}"


@pytest.fixture(scope="session")
def web_built(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """five_celebrity (4 photos of each), two group photos and a broken file, indexed with dlib
    and reclustered; returns the folder holding `home/` and `photos/`."""
    from typer.testing import CliRunner

    from cli.app import app

    root = tmp_path_factory.mktemp("web")
    source = faces_dir / "five_celebrity"
    files = [f for d in sorted(source.iterdir()) for f in sorted(d.glob("train_*"))[:4]]
    link_tree(files, root / "photos" / "celebs", base=source)
    link_tree([faces_dir / "group_photos" / n for n in ("fr_two_people.jpg",
                                                         "fr_kit_with_rose.jpg")],
              root / "photos" / "groups")
    link_tree([faces_dir / "broken" / "not_an_image.jpg"], root / "photos" / "broken")
    for args in (["index", "--model", "dlib", str(root / "photos")], ["recluster"]):
        result = CliRunner().invoke(app, [*args, "--home", str(root / "home")])
        assert result.exit_code == 0, result.stderr
    return root


@pytest.fixture
def web_home(web_built: Path, home: Path) -> Path:
    """A private copy of the built index as this test's home."""
    shutil.copytree(web_built / "home", home)
    return home


@pytest.fixture
def web_settings(web_home: Path) -> Settings:
    return settings_mod.load({"home": web_home})


def make_client(settings: Settings, *, read_only: bool = False):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from web import create_app

    app = create_app(settings, read_only=read_only, token=TOKEN, host=HOST, port=PORT)
    return TestClient(app, base_url=BASE_URL)


@pytest.fixture
def client(web_settings: Settings):  # type: ignore[no-untyped-def]
    with make_client(web_settings) as c:
        yield c


AUTH = {"X-Faceidx-Token": TOKEN}
