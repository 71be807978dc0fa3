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
def web_built(faces_dir: Path, dlib_model, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
              ) -> Path:
    """five_celebrity (4 photos of each), two group photos and a broken file, indexed with the
    session's dlib model and reclustered; returns the folder holding `home/` and `photos/`."""
    from indexer.pipeline import Indexer
    from indexer.recluster import recluster
    from indexer.store import Store

    root = tmp_path_factory.mktemp("web")
    source = faces_dir / "five_celebrity"
    files = [f for d in sorted(source.iterdir()) for f in sorted(d.glob("train_*"))[:4]]
    link_tree(files, root / "photos" / "celebs", base=source)
    link_tree([faces_dir / "group_photos" / n for n in ("fr_two_people.jpg",
                                                         "fr_kit_with_rose.jpg")],
              root / "photos" / "groups")
    link_tree([faces_dir / "broken" / "not_an_image.jpg"], root / "photos" / "broken")
    settings = settings_mod.load({"home": root / "home"}, environ={})
    with Store.open(settings, dlib_model.info) as store:
        with Indexer(store, dlib_model, settings) as indexer:
            summary = indexer.index([root / "photos"])
        assert summary.failed == 1 and summary.faces_added > 20
        recluster(store, settings)
    return root


@pytest.fixture
def web_home(web_built: Path, home: Path) -> Path:
    """A private copy of the built index as this test's home."""
    shutil.copytree(web_built / "home", home)
    return home


@pytest.fixture
def web_settings(web_home: Path) -> Settings:
    return settings_mod.load({"home": web_home})


def make_client(settings: Settings, *, read_only: bool = False, model=None):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from web import create_app

    app = create_app(settings, read_only=read_only, token=TOKEN, host=HOST, port=PORT,
                     query_model=model)
    return TestClient(app, base_url=BASE_URL)


@pytest.fixture
def client(web_settings: Settings, dlib_model):  # type: ignore[no-untyped-def]
    with make_client(web_settings, model=dlib_model) as c:
        yield c


AUTH = {"X-Faceidx-Token": TOKEN}
