"""The app's reads beside a writer: in this process (`watch --serve`), where DuckDB refuses a
read-only and a read-write connection side by side, and the crop cache's bound."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from indexer import browse
from indexer.crops import CropCache
from indexer.settings import Settings
from indexer.store import Store


def test_pages_read_while_a_writer_in_this_process_holds_the_catalog(
        web_settings: Settings) -> None:
    with Store.open(web_settings, keep_open=True) as writer, writer.transaction() as con:
        con.execute("SELECT count(*) FROM faces").fetchone()  # the writer's connection is open
        page = browse.people_page(web_settings)  # a read-only Store in the same process
        assert page.total >= 3 and page.people[0].medoid_face_id is not None


def test_a_writer_in_this_process_waits_for_a_reader_then_writes(web_settings: Settings) -> None:
    reader = Store.open(web_settings, read_only=True)
    reader.people_page(None, 0, 10)
    reader._connect()  # a read-only connection stays open for a moment  # noqa: SLF001
    done: list[str] = []

    def write() -> None:
        with Store.open(web_settings, keep_open=False) as writer:
            writer.set_meta("web-test", "written")
        done.append("yes")

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(0.3)
    assert not done  # it waits: DuckDB refuses a second configuration
    reader.close(save=False)
    thread.join(timeout=30)
    assert done == ["yes"]
    with Store.open(web_settings, read_only=True) as store:
        assert store.get_meta("web-test") == "written"


def test_the_crop_cache_stays_under_its_bound(web_settings: Settings) -> None:
    cache = CropCache(web_settings)
    faces = browse.person_page(web_settings, browse.people_page(web_settings).people[0]
                               .cluster_id).faces
    for face in faces:
        cache.path_for(face.face_id)
    crops = sorted((web_settings.home / "crops").glob("*/*.jpg"))
    assert len(crops) >= len(faces)
    assert CropCache(web_settings).prune() == 0  # under 256 MB: nothing to do
    size = sum(p.stat().st_size for p in crops)
    tight = CropCache(replace(web_settings, crop_cache_mb=1))
    if size <= 1024 * 1024:  # make the bound bite: fill the cache past 1 MB with old files
        filler = web_settings.home / "crops" / "999999"
        filler.mkdir()
        for i in range(12):
            (filler / f"{999999000 + i}-000000000000.jpg").write_bytes(b"\0" * 100_000)
    removed = tight.prune()
    left = sum(p.stat().st_size for p in (web_settings.home / "crops").glob("*/*.jpg"))
    assert removed > 0 and left <= 1024 * 1024


def test_the_app_reads_through_an_attached_catalog_and_lets_go_after_each_request(
        web_settings: Settings) -> None:
    import duckdb
    import pytest

    from indexer.store.attach import AttachedCatalog, reads_through

    from .conftest import make_client

    attached = AttachedCatalog(web_settings.catalog_path, web_settings.lock_timeout)
    with reads_through(attached):
        store = Store.open(web_settings, read_only=True)
        store.people_page(None, 0, 10)
        store._connect()  # the attachment stays while a read is in progress  # noqa: SLF001
        with pytest.raises(duckdb.ResourceInUseException):
            duckdb.connect(str(web_settings.catalog_path))
        store.close(save=False)
    with Store.open(web_settings, keep_open=False) as writer:  # detached: a writer gets in
        writer.set_meta("web-test", "after the read")
    with reads_through(attached), Store.open(web_settings, read_only=True) as store:
        assert store.get_meta("web-test") == "after the read"  # the next read sees it
    with make_client(web_settings) as client:
        assert client.get("/").status_code == 200
        duckdb.connect(str(web_settings.catalog_path)).close()  # the request let go of it
