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


def _medoid_copies(settings: Settings) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Each cluster's copy of its medoid's box and photo hash, and what it should be."""
    with Store.open(settings, read_only=True) as store, store._read() as con:  # noqa: SLF001
        kept = {int(r[0]): (r[1], r[2:]) for r in con.execute(
            "SELECT cluster_id, medoid_of, medoid_x1, medoid_y1, medoid_x2, medoid_y2, "
            "medoid_hash FROM clusters").fetchall()}
        truth = {int(r[0]): (r[1], r[2:]) for r in con.execute(
            "SELECT c.cluster_id, c.medoid_face_id, f.x1, f.y1, f.x2, f.y2, i.content_hash "
            "FROM clusters c LEFT JOIN faces f ON f.face_id = c.medoid_face_id "
            "LEFT JOIN images i ON i.image_id = f.image_id").fetchall()}
    return kept, truth


def test_each_cluster_keeps_its_medoids_box_in_step(web_settings: Settings) -> None:
    """The People page reads the medoid's box and photo hash from the cluster row: the store
    keeps that copy in step through corrections, undo and a deleted photo."""
    from indexer import corrections

    kept, truth = _medoid_copies(web_settings)
    assert kept == truth and any(v[1][0] is not None for v in kept.values())
    first = service.people(web_settings)[0]
    cid, medoid = first["cluster_id"], first["medoid_face_id"]
    corrections.reject(web_settings, [medoid], cid)  # the medoid leaves: another stands in
    kept, truth = _medoid_copies(web_settings)
    assert kept == truth and kept[cid][0] != medoid
    corrections.undo(web_settings)
    kept, truth = _medoid_copies(web_settings)
    assert kept == truth
    page = browse.people_page(web_settings)
    shown = next(p for p in page.people if p.cluster_id == cid)
    assert shown.medoid_bbox is not None and shown.medoid_hash is not None
    # the medoid's photo is deleted: no box of a face that is gone
    face = browse.faces(web_settings, [shown.medoid_face_id])[0]
    with Store.open(web_settings) as store, store.transaction() as con:
        store.clear_faces(con, face.image_id)
    kept, truth = _medoid_copies(web_settings)
    assert kept == truth
    after = {p.cluster_id: p for p in browse.people_page(web_settings).people}
    if cid in after and after[cid].medoid_face_id == shown.medoid_face_id:
        assert after[cid].medoid_bbox is None


def test_the_undo_bar_follows_the_history_across_other_writes(client, web_settings: Settings
                                                              ) -> None:  # type: ignore[no-untyped-def]
    """The last change is kept while only other things change, and read again when the
    history does (a correction, an undo; from this app or the CLI)."""
    from indexer import corrections

    a = service.people(web_settings)[0]["cluster_id"]
    assert client.post(f"/api/people/{a}/name", json={"name": "Zelda"},
                       headers=AUTH).status_code == 200
    assert "named cluster" in client.get("/").text and "Zelda" in client.get("/").text
    _write(web_settings, 1)  # not the history: the bar is kept
    page = client.get("/status").text
    assert "Last change:" in page and "Zelda" in page.split("</header>")[0]
    corrections.rename(web_settings, a, "Yolanda")  # another process's correction
    assert "Yolanda" in client.get("/").text.split("</header>")[0]
    corrections.undo(web_settings)
    bar = client.get("/").text.split("</header>")[0]
    assert "Yolanda" not in bar and "Zelda" in bar
    client.post("/api/undo", headers=AUTH)
    assert "No changes to undo" in client.get("/").text.split("</header>")[0]
