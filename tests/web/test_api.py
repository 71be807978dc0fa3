"""The JSON API and the guard, through the ASGI test client, over a real dlib index."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from indexer import browse, service
from indexer.settings import Settings
from indexer.store import Store
from tests.web.conftest import AUTH, make_client


def _people(settings: Settings) -> list[dict]:
    return service.people(settings)


def _names(settings: Settings) -> dict[int, str | None]:
    return {p["cluster_id"]: p["name"] for p in _people(settings)}


def _two_people(settings: Settings) -> tuple[int, int]:
    people = _people(settings)
    return people[0]["cluster_id"], people[1]["cluster_id"]


# ---------------------------------------------------------------------- reads
def test_people_equals_the_cli_json(client, web_settings: Settings, cli) -> None:  # type: ignore[no-untyped-def]
    api = client.get("/api/people").json()
    assert api == _people(web_settings)
    assert len(api) >= 3 and all(p["medoid_face_id"] for p in api)
    printed = json.loads(cli("people", "--json", "--home", str(web_settings.home)).stdout)
    assert api == printed
    # The same limit gives the same list (the CLI's default is 100; 0 lists everyone).
    for limit in ("1", "0"):
        one = client.get(f"/api/people?limit={limit}").json()
        printed = json.loads(cli("people", "--json", "--limit", limit, "--home",
                                 str(web_settings.home)).stdout)
        assert one == printed
    assert len(client.get("/api/people?limit=1").json()) == 1
    assert client.get("/api/people?limit=-1").status_code == 400


def test_status_equals_the_cli_json(client, web_settings: Settings, cli) -> None:  # type: ignore[no-untyped-def]
    api = client.get("/api/status").json()
    printed = json.loads(cli("status", "--json", "--home", str(web_settings.home)).stdout)
    assert api == printed
    assert api["failed"] == 1 and api["faces"] > 10
    failures = client.get("/api/status?failures=true").json()["failures"]
    assert [f["path"].rsplit("/", 1)[-1] for f in failures] == ["not_an_image.jpg"]


def test_a_persons_faces_are_paged(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    person = _people(web_settings)[0]
    cid, size = person["cluster_id"], person["size"]
    every = client.get(f"/api/people/{cid}/faces?limit=100").json()
    assert every["size"] == size == len(every["faces"])
    first = client.get(f"/api/people/{cid}/faces?offset=0&limit=2").json()["faces"]
    rest = client.get(f"/api/people/{cid}/faces?offset=2&limit=100").json()["faces"]
    assert [f["face_id"] for f in first + rest] == [f["face_id"] for f in every["faces"]]
    assert all(f["cluster_id"] == cid for f in every["faces"])
    assert client.get("/api/people/999999/faces").status_code == 404
    bad = client.get(f"/api/people/{cid}/faces?limit=0")
    assert bad.status_code == 400 and "limit" in bad.json()["error"]


def test_face_crop_is_a_cached_jpeg(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    face = client.get(f"/api/people/{_people(web_settings)[0]['cluster_id']}/faces"
                      ).json()["faces"][0]
    r = client.get(face["crop_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:3] == b"\xff\xd8\xff"
    assert "immutable" in r.headers["cache-control"]
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(r.content)).size == (web_settings.crop_size,) * 2
    cached = list((web_settings.home / "crops").glob(f"*/{face['face_id']}-*.jpg"))
    assert len(cached) == 1
    # asked without its key: served, but revalidated every time
    assert "no-cache" in client.get(f"/faces/{face['face_id']}.jpg").headers["cache-control"]
    assert client.get("/faces/999999.jpg").status_code == 404


def test_a_stale_crop_is_never_served_for_a_reused_face_id(client, web_settings: Settings
                                                           ) -> None:  # type: ignore[no-untyped-def]
    face = browse.person_page(web_settings, _people(web_settings)[0]["cluster_id"]).faces[0]
    bucket = web_settings.home / "crops" / str(face.face_id // 1000)
    bucket.mkdir(parents=True)
    stale = bucket / f"{face.face_id}-000000000000.jpg"
    stale.write_bytes(b"an older face's crop")
    r = client.get(f"/faces/{face.face_id}.jpg")
    assert r.status_code == 200 and r.content != b"an older face's crop"
    assert not stale.exists()


def test_crops_are_removed_with_their_faces(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    face = browse.person_page(web_settings, _people(web_settings)[0]["cluster_id"]).faces[0]
    assert client.get(f"/faces/{face.face_id}.jpg").status_code == 200
    assert list((web_settings.home / "crops").glob(f"*/{face.face_id}-*.jpg"))
    with Store.open(web_settings) as store, store.transaction() as con:
        store.remove_images(con, [face.image_id])
    assert not list((web_settings.home / "crops").glob(f"*/{face.face_id}-*.jpg"))
    assert client.get(f"/faces/{face.face_id}.jpg").status_code == 404


def test_photo_page_and_image(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    group = next(f for f in browse.unassigned(web_settings).others
                 if "groups" in f.path)
    page = client.get(f"/photos/{group.image_id}")
    assert page.status_code == 200
    faces = service_faces_of(web_settings, group.image_id)
    assert len(faces) >= 2
    assert page.text.count('class="box') == len(faces)
    img = client.get(f"/photos/{group.image_id}/image.jpg?size=300")
    assert img.status_code == 200 and img.content[:3] == b"\xff\xd8\xff"
    missing = client.get("/photos/999999")
    assert missing.status_code == 404 and "<title>Not found · faceidx</title>" in missing.text
    assert client.get("/photos/999999/image.jpg").status_code == 404


def service_faces_of(settings: Settings, image_id: int) -> list:  # type: ignore[type-arg]
    return browse.photo_page(settings, image_id).faces


# ---------------------------------------------------------------------- only catalog photos
@pytest.mark.parametrize("path", [
    "/faces/../../etc/passwd",
    "/faces/..%2F..%2Fetc%2Fpasswd",
    "/faces/abc.jpg",
    "/photos/..%2F..%2Fetc%2Fpasswd/image.jpg",
    "/photos/-1/image.jpg",
    "/static/../app.py",
    "/static/..%2Fapp.py",
    "/static/%2e%2e/app.py",
    "/etc/passwd",
])
def test_path_traversal_gets_404(client, path: str) -> None:  # type: ignore[no-untyped-def]
    r = client.get(path)
    assert r.status_code == 404
    assert b"create_app" not in r.content and b"root:" not in r.content


def test_a_photo_swapped_for_a_symlink_or_changed_is_not_served(client, web_settings: Settings,
                                                                tmp_path: Path
                                                                ) -> None:  # type: ignore[no-untyped-def]
    faces = browse.person_page(web_settings, _people(web_settings)[0]["cluster_id"]).faces
    swapped, changed = faces[0], faces[1]
    originals = {p: Path(p).read_bytes() for p in (swapped.path, changed.path)}
    secret = tmp_path / "secret.jpg"
    shutil.copy(changed.path, secret)  # a real image: only the hash check can refuse it
    try:
        os.unlink(swapped.path)
        os.symlink(secret, swapped.path)
        Path(changed.path).write_bytes(Path(secret).read_bytes()[:-10] + b"0123456789")
        for face in (swapped, changed):
            assert client.get(f"/photos/{face.image_id}/image.jpg").status_code == 404
            assert client.get(f"/faces/{face.face_id}.jpg").status_code == 404
    finally:  # the photos are the session's: put them back
        for path, data in originals.items():
            Path(path).unlink(missing_ok=True)
            Path(path).write_bytes(data)


# ---------------------------------------------------------------------- the guard
def test_host_header_must_be_the_bound_host(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/people").status_code == 200
    assert client.get("/api/people", headers={"Host": "localhost:8765"}).status_code == 200
    for host in ("evil.example:8765", "127.0.0.1:9999", "127.0.0.1", "attacker.test"):
        r = client.get("/api/people", headers={"Host": host})
        assert r.status_code == 403 and "Host" in r.json()["error"]


def test_every_action_needs_the_token(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    cid = _people(web_settings)[0]["cluster_id"]
    page = client.get(f"/people/{cid}").text
    assert f'<meta name="faceidx-token" content="{AUTH["X-Faceidx-Token"]}">' in page
    before = _people(web_settings)
    for headers in ({}, {"X-Faceidx-Token": "wrong"}):
        for url, body in ((f"/api/people/{cid}/name", {"name": "Mallory"}),
                          ("/api/merge", {"into": cid, "other": before[1]["cluster_id"]}),
                          ("/api/undo", {})):
            r = client.post(url, json=body, headers=headers)
            assert r.status_code == 403 and "X-Faceidx-Token" in r.json()["error"]
    assert _people(web_settings) == before


def test_read_only_serves_pages_but_refuses_actions(web_settings: Settings) -> None:
    cid = _people(web_settings)[0]["cluster_id"]
    with make_client(web_settings, read_only=True) as c:
        page = c.get(f"/people/{cid}")
        assert page.status_code == 200 and "Read-only" in page.text
        assert 'name="name"' in page.text and "disabled" in page.text
        r = c.post(f"/api/people/{cid}/name", json={"name": "Alice"}, headers=AUTH)
        assert r.status_code == 403 and "read-only" in r.json()["error"]
    assert _names(web_settings)[cid] is None


# ---------------------------------------------------------------------- actions
def test_rename_merge_undo_reject_move(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    a, b = _two_people(web_settings)
    r = client.post(f"/api/people/{a}/name", json={"name": "Alice"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["change"]["kind"]
    assert _names(web_settings)[a] == "Alice"

    sizes = {p["cluster_id"]: p["size"] for p in _people(web_settings)}
    preview = client.get(f"/api/merge-preview?into={a}&other={b}").json()
    assert preview["into"]["cluster_id"] == a and preview["other"]["cluster_id"] == b
    r = client.post("/api/merge", json={"into": a, "other": b, "force": True}, headers=AUTH)
    assert r.status_code == 200
    after = {p["cluster_id"]: p["size"] for p in _people(web_settings)}
    assert after[a] == sizes[a] + sizes[b] and b not in after

    r = client.post("/api/undo", headers=AUTH)
    assert r.status_code == 200
    assert {p["cluster_id"]: p["size"] for p in _people(web_settings)} == sizes

    faces = client.get(f"/api/people/{a}/faces").json()["faces"]
    r = client.post(f"/api/faces/{faces[0]['face_id']}/reject", json={}, headers=AUTH)
    assert r.status_code == 200
    left = [f["face_id"] for f in client.get(f"/api/people/{a}/faces").json()["faces"]]
    assert faces[0]["face_id"] not in left and len(left) == len(faces) - 1

    r = client.post(f"/api/faces/{faces[1]['face_id']}/move", json={"target": b}, headers=AUTH)
    assert r.status_code == 200
    moved = [f["face_id"] for f in client.get(f"/api/people/{b}/faces").json()["faces"]]
    assert faces[1]["face_id"] in moved

    r = client.post("/api/faces/move", json={"face_ids": [faces[2]["face_id"]], "target": None},
                    headers=AUTH)
    new = r.json()["change"]["cluster_id"]
    assert r.status_code == 200 and new not in (a, b)
    assert [f["face_id"] for f in client.get(f"/api/people/{new}/faces").json()["faces"]] \
        == [faces[2]["face_id"]]
    history = client.get("/api/history").json()
    assert len(history) >= 6 and history[0]["change_id"] > history[-1]["change_id"]


def test_htmx_forms_post_too(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    a, b = _two_people(web_settings)
    hx = {**AUTH, "HX-Request": "true"}
    r = client.post(f"/api/people/{a}/name", data={"name": "Bob"}, headers=hx)
    assert r.status_code == 200 and r.headers["HX-Refresh"] == "true"
    r = client.post("/api/merge", data={"into": "Bob", "other": str(b), "force": "1"}, headers=hx)
    assert r.status_code == 200 and r.headers["HX-Redirect"] == f"/people/{a}"
    assert "Undo" in client.get("/").text


def test_accept_a_suggestion(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    settings = replace(web_settings, suggest_distance=2.0)  # everything is "close"
    page = browse.unassigned(settings)
    suggestion = page.suggestions[0]
    ids = [f.face_id for f in suggestion.faces]
    r = client.post("/api/faces/accept", json={"face_ids": ids,
                                               "cluster_id": suggestion.person.cluster_id},
                    headers=AUTH)
    assert r.status_code == 200
    got = {f["face_id"] for f in client.get(
        f"/api/people/{suggestion.person.cluster_id}/faces").json()["faces"]}
    assert set(ids) <= got


def test_only_the_closer_suggested_faces_come_ticked(
        web_settings: Settings) -> None:
    import re

    settings = replace(web_settings, suggest_distance=2.0)  # far faces are suggested too
    page = browse.unassigned(settings)
    pairs = [(f.face_id, d) for s in page.suggestions for f, d in zip(s.faces, s.distances,
                                                                        strict=True)]
    assert any(d > page.tick for _, d in pairs)  # else this test shows nothing
    with make_client(settings) as client:
        html = client.get("/unassigned").text
    for face_id, distance in pairs:
        box = re.search(rf'<input type="checkbox" name="face_ids" value="{face_id}" ?(\w*)>'
                        rf'<span>#{face_id} · ([0-9.]+)</span>', html)
        assert box is not None, face_id
        assert (box.group(1) == "checked") == (distance <= page.tick)
        assert box.group(2) == f"{distance:.2f}"


@pytest.mark.parametrize(("url", "body", "code", "words"), [
    ("/api/people/{a}/name", {"name": "   "}, 400, "blank"),
    ("/api/people/{a}/name", {}, 400, "name"),
    ("/api/people/999999/name", {"name": "Zed"}, 404, "999999"),
    ("/api/merge", {"into": "{a}", "other": "{a}"}, 400, "itself"),
    ("/api/merge", {"into": "{a}"}, 400, "other"),
    ("/api/merge", {"into": "{a}", "other": 999999}, 404, "999999"),
    ("/api/faces/999999/reject", {"cluster_id": "{a}"}, 404, "999999"),
    ("/api/faces/move", {"face_ids": [], "target": "{a}"}, 400, "no faces"),
    ("/api/faces/move", {"face_ids": ["x"], "target": "{a}"}, 400, "whole numbers"),
    ("/api/undo", None, 400, "undo"),
])
def test_bad_input_is_a_4xx_with_one_line_and_changes_nothing(
        client, web_settings: Settings, url: str, body: dict | None, code: int, words: str,
) -> None:  # type: ignore[no-untyped-def]
    a = _people(web_settings)[0]["cluster_id"]
    url = url.format(a=a)
    if body is not None:
        body = {k: (int(v.format(a=a)) if isinstance(v, str) and "{a}" in v else v)
                for k, v in body.items()}
    before = _people(web_settings)
    r = client.post(url, json=body, headers=AUTH) if body is not None else \
        client.post(url, headers=AUTH)
    assert r.status_code == code, r.text
    message = r.json()["error"]
    assert words in message.lower() and "\n" not in message
    assert _people(web_settings) == before


def test_body_that_is_not_json_is_refused(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    a = _people(web_settings)[0]["cluster_id"]
    r = client.post(f"/api/people/{a}/name", content=b"{not json",
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]


# ---------------------------------------------------------------------- search by photo
def test_search_by_photo_answers_what_query_answers(client, web_settings: Settings,
                                                    faces_dir: Path, dlib_model
                                                    ) -> None:  # type: ignore[no-untyped-def]
    from indexer.imageio import decode

    photo = faces_dir / "group_photos" / "fr_kit_with_rose.jpg"
    r = client.post("/api/search", files={"photo": (photo.name, photo.read_bytes())},
                    headers=AUTH)
    assert r.status_code == 200
    rgb = decode(photo, max_pixels=web_settings.max_image_pixels,
                 max_bytes=web_settings.max_file_bytes)  # as `faceidx query` reads a file
    digest = hashlib.blake2b(photo.read_bytes(), digest_size=20).hexdigest()  # it is indexed
    expected = [q.to_json() for q in service.query_rgb(web_settings, rgb, 10, model=dlib_model,
                                                       photo_hash=digest)]
    assert r.json() == expected and len(expected) == 2
    page = client.post("/search", files={"photo": (photo.name, photo.read_bytes())},
                       headers={**AUTH, "HX-Request": "true"})
    assert page.status_code == 200 and page.text.count('class="result"') == 2


def test_search_refuses_what_is_not_an_image_or_too_large(client, web_settings: Settings,
                                                          faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    bad = faces_dir / "broken" / "not_an_image.jpg"
    r = client.post("/api/search", files={"photo": (bad.name, bad.read_bytes())}, headers=AUTH)
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = client.post("/api/search", files={"other": ("x", b"1")}, headers=AUTH)
    assert r.status_code == 400 and "photo" in r.json()["error"]
    small = replace(web_settings, upload_max_bytes=1000)
    with make_client(small, model=client.app.state.ctx.query_model()) as c:
        photo = faces_dir / "group_photos" / "fr_kit_with_rose.jpg"
        r = c.post("/api/search", files={"photo": (photo.name, photo.read_bytes())},
                   headers=AUTH)
        assert r.status_code == 413 and "limit" in r.json()["error"]


def test_every_page_renders(client, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    a, b = _two_people(web_settings)
    image = browse.person_page(web_settings, a).faces[0].image_id
    for url, words in (("/", "People"), (f"/people/{a}", "Save name"),
                       (f"/people/{b}/merge?into={a}", "What it will do"),
                       ("/unassigned", "Unassigned"), (f"/photos/{image}", 'class="box'),
                       ("/search", 'type="file"'), ("/status", "not_an_image.jpg"),
                       ("/?q=zzz-nobody", "No person matches")):
        r = client.get(url)
        assert r.status_code == 200 and words in r.text, url
    missing = client.get("/people/999999")
    assert missing.status_code == 404 and "999999" in missing.text and "<html" in missing.text

