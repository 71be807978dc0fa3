"""Reclustering through the CLI: stable ids, names that survive, corrections that hold."""

import json
from collections import Counter
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.assign import Assigner
from indexer.store import Store


def _store(home: Path) -> Store:
    return Store.open(settings_mod.load({"home": home}), read_only=True)


def _cluster_of(home: Path, person: str) -> int:
    """The cluster holding most of `person`'s faces."""
    with _store(home) as store:
        ids = [f.cluster_id for f in store.faces() if f"/{person}/" in f.path
               and f.cluster_id is not None]
    return Counter(ids).most_common(1)[0][0]


def test_names_survive_new_photos_and_recluster(cli, celeb: Path, home: Path
                                                ) -> None:  # type: ignore[no-untyped-def]
    madonna, elton = _cluster_of(home, "madonna"), _cluster_of(home, "elton_john")
    assert madonna != elton
    cli("name", str(madonna), "Madonna")
    cli("name", str(elton), "Elton")
    cli("index", str(celeb / "later"))
    report = json.loads(cli("recluster", "--json").stdout)
    assert report["named_kept"] == 2
    people = {p["name"]: p for p in json.loads(cli("people", "--json").stdout) if p["name"]}
    assert people["Madonna"]["cluster_id"] == madonna
    assert people["Elton"]["cluster_id"] == elton
    assert _cluster_of(home, "madonna") == madonna and _cluster_of(home, "elton_john") == elton
    with _store(home) as store:
        later = [f for f in store.faces() if "/later/madonna/" in f.path]
        # most of the new photos of Madonna joined the named person
        assert sum(f.cluster_id == madonna for f in later) >= 0.7 * len(later)
    assert "/madonna/" in people["Madonna"]["medoid_path"]


def test_recluster_twice_changes_nothing(cli, celeb: Path) -> None:  # type: ignore[no-untyped-def]
    before = json.loads(cli("people", "--json").stdout)
    report = json.loads(cli("recluster", "--json").stdout)
    assert report["faces_moved"] == 0 and report["new"] == 0 and report["dissolved"] == 0
    assert json.loads(cli("people", "--json").stdout) == before


def test_rejected_face_stays_out_of_the_person(cli, celeb: Path, home: Path
                                               ) -> None:  # type: ignore[no-untyped-def]
    madonna = _cluster_of(home, "madonna")
    cli("name", str(madonna), "Madonna")
    with _store(home) as store:
        face = next(f for f in store.faces() if f.cluster_id == madonna)
    cli("reject", str(face.face_id), "Madonna")
    cli("recluster")
    with _store(home) as store:
        (after,) = store.faces([face.face_id])
        assert after.cluster_id != madonna
        _, vectors = store.embeddings([face.face_id])
    # online assignment passes the rejected cluster over too
    with Store.open(settings_mod.load({"home": home})) as store:
        assigner = Assigner(store, store.settings)
        (row,) = assigner.assign([face.face_id], vectors)
    assert row[1] != madonna


def test_merge_and_move(cli, celeb: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    madonna, elton = _cluster_of(home, "madonna"), _cluster_of(home, "elton_john")
    cli("name", str(madonna), "Madonna")
    with _store(home) as store:
        sizes = {p.cluster_id: p.size for p in store.people()}
        stray = next(f for f in store.faces() if f.cluster_id == elton)
    cli("move", str(stray.face_id), "Madonna")
    cli("recluster")
    with _store(home) as store:
        assert store.faces([stray.face_id])[0].cluster_id == madonna  # pinned by the user
    cli("merge", "Madonna", str(elton))
    people = json.loads(cli("people", "--json").stdout)
    merged = next(p for p in people if p["name"] == "Madonna")
    assert merged["size"] == sizes[madonna] + sizes[elton]
    assert all(p["cluster_id"] != elton for p in people)


def test_unknown_cluster_is_a_one_line_error(cli, celeb: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("name", "9999", "Nobody", ok=False)
    assert result.exit_code == 2 and "no cluster or person '9999'" in result.stderr
    result = cli("recluster", "--algorithm", "magic", ok=False)
    assert result.exit_code == 2 and "unknown algorithm" in result.stderr


def test_every_algorithm_runs_through_the_cli(cli, celeb: Path) -> None:  # type: ignore[no-untyped-def]
    for algorithm in ("dbscan", "chinese-whispers", "kmeans", "agglomerative", "hdbscan"):
        report = json.loads(cli("recluster", "--algorithm", algorithm, "--json").stdout)
        assert report["algorithm"] == algorithm and report["faces"] > 50
        assert report["clusters"] >= 1
    assert np.isfinite(report["seconds"])
