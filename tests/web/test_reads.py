"""How the app reads the catalog: once per request, never for writing on a GET, and search by a
photo that is itself indexed (through the ASGI test client, over a real dlib index)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from indexer import browse, service
from indexer.settings import Settings
from indexer.store import Store
from tests.web.conftest import AUTH


def _write(settings: Settings, i: int) -> None:
    """A write to the catalog (as the daemon's batch): nothing read before can be reused."""
    with Store.open(settings, keep_open=False) as store:
        store.set_meta("test_reads", str(i))


def test_every_page_attaches_the_catalog_once_per_request(client, web_settings: Settings
                                                          ) -> None:  # type: ignore[no-untyped-def]
    people = service.people(web_settings)
    a, b = people[0]["cluster_id"], people[1]["cluster_id"]
    image = browse.person_page(web_settings, a).faces[0].image_id
    catalog = client.app.state.catalog
    urls = ["/", "/?q=zz", f"/people/{a}", f"/people/{b}/merge?into={a}", "/unassigned",
            f"/photos/{image}", "/status", "/search", "/api/people", f"/api/people/{a}",
            f"/api/people/{a}/faces?limit=5", "/api/status", "/api/history",
            f"/api/merge-preview?into={a}&other={b}"]
    memo = {"/", "/?q=zz", f"/people/{a}", "/unassigned", f"/photos/{image}", "/search",
            "/api/people", f"/api/people/{a}/faces?limit=5"}  # kept while nothing changes
    for i, url in enumerate(urls):
        _write(web_settings, i)
        before = catalog.attaches
        r = client.get(url)
        assert r.status_code == 200, url
        assert catalog.attaches - before == 1, f"{url}: {catalog.attaches - before} attaches"
        again = catalog.attaches
        assert client.get(url).status_code == 200
        if url in memo:
            assert catalog.attaches == again, f"{url} read again an unchanged catalog"


def test_the_merge_preview_does_not_write_the_catalog(client, web_settings: Settings
                                                      ) -> None:  # type: ignore[no-untyped-def]
    people = service.people(web_settings)
    a, b = people[0]["cluster_id"], people[1]["cluster_id"]
    before = browse.catalog_version(web_settings)
    page = client.get(f"/people/{b}/merge?into={a}")
    assert page.status_code == 200 and "What it will do" in page.text
    api = client.get(f"/api/merge-preview?into={a}&other={b}")
    assert api.status_code == 200 and api.json()["into"]["cluster_id"] == a
    assert client.get(f"/api/merge-preview?into={a}&other={a}").status_code == 400
    assert browse.catalog_version(web_settings) == before  # opened for writing, it would not be
    assert client.post("/api/merge", json={"into": a, "other": b, "force": True},
                       headers=AUTH).status_code == 200
    assert browse.catalog_version(web_settings) != before


def test_search_by_an_indexed_photo_leaves_its_own_faces_out(client, web_settings: Settings,
                                                             faces_dir: Path
                                                             ) -> None:  # type: ignore[no-untyped-def]
    photo = faces_dir / "group_photos" / "fr_kit_with_rose.jpg"
    data = photo.read_bytes()
    with Store.open(web_settings, read_only=True) as store:
        own = set(store.faces_of_bytes(hashlib.blake2b(data, digest_size=20).hexdigest()))
    assert len(own) == 2  # the photo is in the index, with both faces
    result = client.post("/api/search", files={"photo": (photo.name, data)},
                         headers=AUTH).json()
    assert len(result) == 2
    for face in result:
        marked = [m for m in face["matches"] if m["this_photo"]]
        others = [m for m in face["matches"] if not m["this_photo"]]
        assert {m["face_id"] for m in marked} == own
        assert len(others) == 10 and not own & {m["face_id"] for m in others}
        assert min(m["distance"] for m in marked) < 1e-3  # itself, as indexed
        verdict = face["verdict"]  # judged without the photo's own faces
        assert verdict is None or verdict["distance"] > 0.05
    page = client.post("/search", files={"photo": (photo.name, data)},
                       headers={**AUTH, "HX-Request": "true"})
    assert page.status_code == 200 and page.text.count("this photo</strong>") == 4
    assert "This photo is in the index" in page.text
    closest = page.text.split("<h3>Closest people</h3>")
    assert all("0.000" not in part.split("<h3>Closest faces</h3>")[0] for part in closest[1:])


def test_search_by_a_photo_not_indexed_marks_nothing(client, web_settings: Settings,
                                                     faces_dir: Path
                                                     ) -> None:  # type: ignore[no-untyped-def]
    photo = next(p for p in sorted((faces_dir / "five_celebrity").glob("*/val_*")))
    result = client.post("/api/search", files={"photo": (photo.name, photo.read_bytes())},
                         headers=AUTH).json()
    assert result and all(not m["this_photo"] and len(f["matches"]) == 10
                          for f in result for m in f["matches"])


def test_the_catalog_version_tells_every_commit_apart(web_settings: Settings) -> None:
    """Every commit changes it, even one that leaves the file's mtime as it was (file times
    tick every few ms: two commits can share one), so a page read before a commit is never
    kept after it."""
    path = web_settings.catalog_path
    seen = [browse.catalog_version(web_settings)]
    for i in range(4):
        st = path.stat()
        _write(web_settings, i)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if in the same clock tick
        seen.append(browse.catalog_version(web_settings))
    with Store.open(web_settings, keep_open=True) as store:  # commits kept in the log
        for i in range(3):
            store.set_meta("test_reads", f"open {i}")
            seen.append(browse.catalog_version(web_settings))
    assert len(set(seen)) == len(seen)
