"""New people online: the watch daemon founds people from unassigned faces without a recluster,
and its periodic recluster runs on growth."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from indexer.recluster import recluster_due
from indexer.settings import Settings
from indexer.watch import WatchDaemon
from tests.conftest import lfw_identities
from tests.test_watch import _readers, catalog, counts, no_recluster, running, wait_for

# Three LFW people whose first three photos each hold one face (dlib), every two of them
# 0.24-0.30 apart: clearly one person each.
NEW_PEOPLE = ("Edmund_Hillary", "Madeleine_Albright", "Pedro_Solbes")


def test_three_new_people_appear_without_a_recluster(
        settings: Settings, dlib_model: Any, faces_dir: Path, tmp_path: Path,
        cli) -> None:  # type: ignore[no-untyped-def]
    people = lfw_identities(faces_dir, min_images=3, count=10_000)
    photos = [p for n in NEW_PEOPLE for p in people[n][:3]]
    folder = tmp_path / "watched"
    folder.mkdir()
    quick = replace(settings, watch_settle=0.5, watch_debounce=0.1, batch_size=4,
                    recluster_every=0, recluster_interval=0)
    with running(WatchDaemon(quick, dlib_model, [folder], recluster=no_recluster)) as daemon:
        for photo in sorted(photos, key=lambda p: p.name[-8:]):  # each batch mixes people
            shutil.copy2(photo, folder)
        wait_for(lambda: counts(quick).images == 9 and daemon.idle.is_set(), "nine photos")
        assert daemon.report.reclusters == 0
        faces = catalog(quick).faces()
    _readers.pop(quick.home).close(save=False)  # the CLI opens the catalog its own way
    listed = json.loads(cli("people", "--json", "--home", str(quick.home)).stdout)
    assert len(listed) == 3, listed
    who = {}
    for face in faces:
        assert face.cluster_id is not None, face.assign_reason
        who.setdefault(face.cluster_id, set()).add(Path(face.path).name.rsplit("_", 1)[0])
    assert sorted(map(sorted, who.values())) == [[n] for n in NEW_PEOPLE]
    assert {p["size"] for p in listed} == {3}


def _settings(**kw: Any) -> Settings:
    return replace(Settings(home=Path("/nonexistent")), **kw)


@pytest.mark.parametrize(("new", "before", "since", "drained", "due"), [
    (0, 1000, 1e9, True, False),       # nothing new
    (50, 1000, 1e9, True, False),      # 5% < 10%, 50 < 200
    (100, 1000, 1e9, True, True),      # grew 10%
    (200, 10_000, 1e9, True, True),    # recluster_every first
    (100, 1000, 10.0, True, False),    # too soon after the last one
    (100, 1000, 1e9, False, True),     # an interval is set: a busy queue does not delay it
    (1, 0, 1e9, True, True),           # the first faces of an empty index
])
def test_recluster_runs_on_growth_at_most_once_per_interval(
        new: int, before: int, since: float, drained: bool, due: bool) -> None:
    s = _settings(recluster_every=200, recluster_growth=0.10, recluster_interval=3600.0)
    assert (recluster_due(new, before, since, s, drained=drained) is not None) == due


def test_without_an_interval_the_recluster_waits_for_the_queue_and_zero_turns_it_off() -> None:
    s = _settings(recluster_every=200, recluster_interval=0.0)
    assert recluster_due(500, 1000, 0.0, s, drained=False) is None
    assert "grew" in (recluster_due(150, 1000, 0.0, s, drained=True) or "")
    assert recluster_due(10**6, 1000, 1e9, replace(s, recluster_every=0), drained=True) is None


def test_a_second_photo_makes_a_person_in_its_own_batch(
        settings: Settings, dlib_model: Any, faces_dir: Path, tmp_path: Path) -> None:
    from indexer.assign import Assigner
    from indexer.pipeline import Indexer
    from indexer.store import Store

    people = lfw_identities(faces_dir, min_images=3, count=10_000)
    first, second = people["Madeleine_Albright"][:2]
    with Store.open(settings, dlib_model.info) as store:
        assigner = Assigner(store, settings)
        with Indexer(store, dlib_model, settings,
                     on_faces_added=assigner.on_faces_added) as indexer:
            for n, photo in enumerate((first, second)):
                (tmp_path / f"batch{n}").mkdir()
                shutil.copy2(photo, tmp_path / f"batch{n}")
                indexer.index([tmp_path / f"batch{n}"])
                if n == 0:
                    assert [f.cluster_id for f in store.faces()] == [None]
        faces = store.faces()
    assert len(faces) == 2 and faces[0].cluster_id is not None
    assert faces[0].cluster_id == faces[1].cluster_id
    assert all(f.assign_reason.startswith("online: founded") for f in faces)
