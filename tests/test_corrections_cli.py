"""Corrections and undo through the CLI, on a real dlib index of the five_celebrity photos:
each correction is recorded, `undo` puts the catalog back (also after a recluster), and the
people/status/query/help output a new user reads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cli.watch_cmd import CatchUpProgress
from indexer import corrections
from indexer import settings as settings_mod
from indexer.errors import Conflict
from indexer.store import Store

Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(home: Path) -> Snapshot:
    """Everything a correction may change, read back from the catalog."""
    store = Store.open(settings_mod.load({"home": home}), read_only=True)
    try:
        with store._read() as con:
            def rows(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in con.execute(sql).fetchall()]

            return {
                "faces": rows("SELECT face_id, cluster_id FROM faces ORDER BY 1"),
                "pins": rows("SELECT face_id, cluster_id FROM face_pins ORDER BY 1"),
                "rejections": rows("SELECT face_id, cluster_id FROM face_rejections "
                                   "ORDER BY 1, 2"),
                "people": rows("SELECT person_id, name, cluster_id FROM people ORDER BY 1"),
                "clusters": rows("SELECT cluster_id, size FROM clusters WHERE size > 0 "
                                 "ORDER BY 1"),
            }
    finally:
        store.close(save=False)


def members(snap: Snapshot, cluster: int | None) -> list[int]:
    return [f for f, c in snap["faces"] if c == cluster]


def clusters_of(home: Path, people: list[str]) -> dict[str, int]:
    """The cluster holding most of each person's faces."""
    store = Store.open(settings_mod.load({"home": home}), read_only=True)
    with store:
        faces = store.faces()
    return {p: Counter(f.cluster_id for f in faces if f"/{p}/" in f.path
                       and f.cluster_id is not None).most_common(1)[0][0] for p in people}


@pytest.fixture
def named(cli, celeb: Path, home: Path) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The copied index with Madonna and Mindy named; their cluster ids, and two unnamed."""
    ids = clusters_of(home, ["madonna", "mindy_kaling", "jerry_seinfeld", "elton_john"])
    cli("name", str(ids["madonna"]), "Madonna")
    cli("name", str(ids["mindy_kaling"]), "Mindy")
    return ids


CORRECTIONS = {
    "name": lambda ids, s: ["name", str(ids["jerry_seinfeld"]), "Jerry"],
    "rename": lambda ids, s: ["name", "Madonna", "Madonna Ciccone"],
    "merge": lambda ids, s: ["merge", "Madonna", str(ids["elton_john"])],
    "merge_named": lambda ids, s: ["merge", "Madonna", "Mindy"],
    "reject": lambda ids, s: ["reject", *map(str, members(s, ids["madonna"])[:2]), "Madonna"],
    "move": lambda ids, s: ["move", str(members(s, ids["jerry_seinfeld"])[0]), "Mindy"],
    "split": lambda ids, s: ["move", *map(str, members(s, ids["jerry_seinfeld"])[:4]), "--new"],
}


@pytest.mark.parametrize("kind", sorted(CORRECTIONS))
def test_each_correction_then_undo_restores_the_catalog(
        cli, named: dict[str, int], home: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(home)
    out = cli(*CORRECTIONS[kind](named, before)).stdout
    assert "`faceidx undo` takes it back" in out
    after = snapshot(home)
    assert after != before, f"{kind} changed nothing"
    if kind == "split":
        new = max(c for c, _ in after["clusters"])
        assert new not in {c for c, _ in before["clusters"]}
        assert len(members(after, new)) == 4
    if kind == "merge_named":
        assert [p[1] for p in after["people"]] == ["Madonna"], "the second name is dropped"
    undo = cli("undo").stdout
    assert undo.startswith("undid: ")
    assert snapshot(home) == before
    history = json.loads(cli("history", "--json").stdout)
    assert [h["kind"] for h in history[:2]] == ["undo", history[1]["kind"]]
    assert history[1]["undone"] is True and history[0]["undone"] is False


def test_undo_after_a_recluster_restores_what_the_user_had(
        cli, named: dict[str, int], home: Path) -> None:  # type: ignore[no-untyped-def]
    cli("recluster")  # a recluster alone keeps this index as it is
    before = snapshot(home)
    jerry, elton = named["jerry_seinfeld"], named["elton_john"]
    cli("merge", str(jerry), str(elton))  # two unnamed: elton's id is gone, nothing pinned
    cli("recluster")  # takes the merged cluster apart again, under new ids
    assert snapshot(home) != before
    assert "undid: merged cluster" in cli("undo").stdout
    assert snapshot(home) == before

    split = members(before, named["madonna"])[:3]
    cli("move", *map(str, split), "--new")
    cli("reject", str(members(before, jerry)[0]), str(jerry))
    cli("recluster")
    cli("undo")
    cli("undo")
    assert snapshot(home) == before
    kinds = [(h["kind"], h["undone"]) for h in json.loads(cli("history", "--json").stdout)]
    assert kinds[:5] == [("undo", False), ("undo", False), ("reject", True), ("split", True),
                         ("undo", False)]
    text = cli("history").stdout.splitlines()
    assert text[0].split() == ["CHANGE", "WHEN", "KIND", "WHAT"]
    assert "(undone)" in text[3] and "reject" in text[3]


def test_blank_name_and_nothing_to_undo_are_one_line_refusals(
        cli, celeb: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(home)
    cluster = str(before["clusters"][0][0])
    for blank in ("", "   ", "\t"):
        result = cli("name", cluster, blank, ok=False)
        assert result.exit_code == 2
        assert result.stderr.strip() == "faceidx: error: a name cannot be empty or blank"
    result = cli("undo", ok=False)
    assert result.exit_code == 2 and "nothing to undo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(home) == before
    assert json.loads(cli("history", "--json").stdout) == []


def test_a_name_taken_suggests_the_merge_and_merge_into_itself_is_refused(
        cli, named: dict[str, int], home: Path) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(home)
    result = cli("name", str(named["jerry_seinfeld"]), "Madonna", ok=False)
    assert result.exit_code == 2
    assert f"use `faceidx merge {named['madonna']} {named['jerry_seinfeld']}`" in result.stderr
    result = cli("merge", "Madonna", str(named["madonna"]), ok=False)
    assert result.exit_code == 2 and "into itself" in result.stderr
    assert snapshot(home) == before


def test_merge_of_two_people_in_one_photo_needs_force(
        cli, named: dict[str, int], home: Path) -> None:  # type: ignore[no-untyped-def]
    store = Store.open(settings_mod.load({"home": home}), read_only=True)
    with store:
        faces = store.faces()
    by_photo: dict[int, list[int]] = {}
    for f in faces:
        by_photo.setdefault(f.image_id, []).append(f.face_id)
    # one photo here shows two faces: Jerry's, and one nobody has
    cluster = {f.face_id: f.cluster_id for f in faces}
    jerry = named["jerry_seinfeld"]
    pair = next(ids for ids in by_photo.values()
                if len(ids) == 2 and jerry in {cluster[i] for i in ids})
    other_face = next(i for i in pair if cluster[i] != jerry)
    new = json.loads(json.dumps(corrections.move(settings_mod.load({"home": home}),
                                                 [other_face], None).cluster_id))
    before = snapshot(home)
    settings = settings_mod.load({"home": home})
    preview = corrections.merge_preview(settings, jerry, new)
    assert preview.needs_force and [c[:2] for c in preview.conflicts] == [
        (next(i for i in pair if i != other_face), other_face)]
    with pytest.raises(Conflict):
        corrections.merge(settings, jerry, new)
    result = cli("merge", str(jerry), str(new), ok=False)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert snapshot(home) == before
    cli("merge", "--force", str(jerry), str(new))
    assert {cluster for f, cluster in snapshot(home)["faces"] if f in pair} == {jerry}
    cli("undo")
    assert snapshot(home) == before


def test_people_header_and_json_give_the_medoid(
        cli, named: dict[str, int], home: Path) -> None:  # type: ignore[no-untyped-def]
    rows = json.loads(cli("people", "--json").stdout)
    assert list(rows[0]) == ["cluster_id", "name", "size", "medoid_face_id", "medoid_bbox",
                             "medoid_path"]
    assert [r["name"] for r in rows[:2]] == ["Madonna", "Mindy"] or \
        [r["name"] for r in rows[:2]] == ["Mindy", "Madonna"]
    store = Store.open(settings_mod.load({"home": home}), read_only=True)
    with store:
        faces = {f.face_id: f for f in store.faces()}
    for r in rows:
        face = faces[r["medoid_face_id"]]
        assert face.cluster_id == r["cluster_id"] and face.path == r["medoid_path"]
        assert r["medoid_bbox"] == [round(v, 1) for v in face.bbox]
    lines = cli("people").stdout.splitlines()
    assert lines[0].split()[:4] == ["CLUSTER", "NAME", "FACES", "MEDOID"]
    first = lines[1].split()
    assert first[0] == str(rows[0]["cluster_id"]) and first[3] == str(rows[0]["medoid_face_id"])


def test_query_ends_with_a_verdict_and_status_counts_photos_without_a_face(
        cli, named: dict[str, int], celeb: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli("query", "--k", "3", str(celeb / "later" / "madonna" / "val_1.jpg")).stdout
    last = out.strip().splitlines()[-1].strip()
    assert last.startswith("most likely: Madonna, distance 0.")
    assert last.endswith("same person below 0.30")
    verdict = json.loads(cli("query", "--json", str(celeb / "later" / "madonna" /
                                                      "val_1.jpg")).stdout)[0]["verdict"]
    assert verdict["name"] == "Madonna" and verdict["same_person"] is True
    assert verdict["distance"] < verdict["threshold"] == 0.30

    status = json.loads(cli("status", "--json").stdout)
    store = Store.open(settings_mod.load({"home": home}), read_only=True)
    with store:
        with_face = {f.path for f in store.faces()}
    assert status["images_no_face"] == status["images_ok"] - len(with_face) > 0
    assert f"({status['images_no_face']} with no face, 0 failed)" in cli("status").stdout


def test_help_shows_flags_as_flags(cli) -> None:  # type: ignore[no-untyped-def]
    for command in ("status", "people", "merge", "move", "history", "watch"):
        text = cli(command, "--help").stdout
        assert "<bool>" not in text, f"{command} --help:\n{text}"
        assert "--help" in text
    assert "--json" in cli("status", "--help").stdout
    assert "--new" in cli("move", "--help").stdout


def test_catch_up_progress_gives_count_rate_and_eta(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    now = [100.0]
    progress = CatchUpProgress(clock=lambda: now[0])
    progress.start(100, "catch-up")
    for _ in range(10):  # 10 files a second, a line every 5 s
        now[0] += 1.0
        progress.advance(10)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["faceidx: catch-up: 100 file(s) to index",
                     "faceidx: catch-up: 50/100 files, 10.0 files/s, ETA 5s",
                     "faceidx: catch-up done: 100/100 files in 10s (10.0 files/s)"]
