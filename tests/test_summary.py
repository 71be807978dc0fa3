"""The summary beside the catalog (indexer/summary.py): `status`, `people` and `history`
answer from it only while the catalog is unchanged, and answer exactly as the catalog does.
Real DuckDB files of a synthetic home under tmp_path; writers in other processes."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from indexer import corrections, service, summary
from indexer.settings import Settings
from indexer.store import Store
from indexer.synthetic_home import build

REPO = Path(__file__).resolve().parent.parent

FAST = """
import sys
from cli import fastpath
code = fastpath.run(sys.argv[1:])
print("duckdb imported:", "_duckdb" in sys.modules or "duckdb" in sys.modules,
      file=sys.stderr)
sys.exit(code)
"""


def _faceidx(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A light command in a fresh process, as `faceidx` runs it."""
    env = {**os.environ, "FACEIDX_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", FAST, *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def _live(info: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in info.items() if k != "indexer_running"}))


def _catalog(settings: Settings) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """What the catalog says, read as the use cases always read it."""
    return (_live(service.status(settings, with_failures=True)),
            json.loads(json.dumps(service.people_top(settings, None))),
            [asdict(c) for c in corrections.history(settings, 50)])


def _summarised(settings: Settings) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    return (_live(summary.status(settings, with_failures=True)),
            json.loads(json.dumps(summary.people_top(settings, None))),
            summary.history(settings, 50))


@pytest.fixture
def synthetic(settings: Settings) -> Settings:
    build(settings, 400, "dlib", seed=3, named=2)
    return settings


def test_the_summary_answers_as_the_catalog_does(synthetic: Settings) -> None:
    settings = synthetic
    file = settings.home / summary.FILE
    file.unlink(missing_ok=True)
    truth = _catalog(settings)
    assert _summarised(settings) == truth  # read from the catalog, and written down
    assert summary.load(settings) is not None
    assert _summarised(settings) == truth  # read from the file
    rows, total = summary.people_top(settings, 3)
    assert len(rows) == 3 and total == truth[1][1] and rows == truth[1][0][:3]
    assert summary.history(settings, 1) == truth[2][:1]


def test_the_fast_commands_skip_duckdb_while_the_summary_is_current(synthetic: Settings
                                                                    ) -> None:
    home = synthetic.home
    for args in (["status", "--json"], ["people", "--json"], ["history", "--json"]):
        again = _faceidx(home, *args)  # the build's writer left the summary current
        assert again.stderr.strip().endswith("duckdb imported: False"), args
    assert json.loads(again.stdout) == [asdict(c) for c in corrections.history(synthetic, 50)]
    (home / summary.FILE).unlink()
    first = _faceidx(home, "status", "--json")  # no summary: reads the catalog, writes it
    assert first.stderr.strip().endswith("duckdb imported: True")
    assert _faceidx(home, "people").stderr.strip().endswith("duckdb imported: False")


def test_a_writer_leaves_the_summary_current(synthetic: Settings) -> None:
    """A write by another process (`faceidx name`, a daemon's batch) brings the summary up
    to date as it lets the catalog go: the first read after it needs no catalog."""
    settings = synthetic
    summary.status(settings)  # a current summary
    before = summary.people_top(settings, 100)[0]
    target = next(r for r in before if r["name"] is None)
    name = _faceidx(settings.home, "name", str(target["cluster_id"]), "Zora")
    assert name.stderr.strip().endswith("duckdb imported: True")
    assert summary.load(settings) is not None  # current, written by the writer
    assert _summarised(settings) == _catalog(settings)
    rows = summary.people_top(settings, 100)[0]
    assert any(r["cluster_id"] == target["cluster_id"] and r["name"] == "Zora" for r in rows)
    assert summary.history(settings, 1)[0]["summary"].endswith("'Zora'")
    assert summary.status(settings)["people"] == 3
    # photos and faces added and removed by a writer in this process, through the store:
    # the count of read photos with no face is counted again, not carried over
    with Store.open(settings) as store, store.transaction() as con:
        empty = store.upsert_image(con, path="synthetic://test/empty.jpg", size=1, mtime=0.0,
                                   content_hash="empty", status="ok")
    assert summary.load(settings) is not None
    assert summary.status(settings)["images_no_face"] == 1
    assert _summarised(settings) == _catalog(settings)
    with Store.open(settings) as store, store.transaction() as con:
        store.add_faces(con, empty, [_face_like(store, settings)])
    assert summary.status(settings)["images_no_face"] == 0
    assert _summarised(settings) == _catalog(settings)
    with Store.open(settings) as store, store.transaction() as con:  # faces removed
        store.clear_faces(con, empty)
    assert summary.load(settings) is not None
    assert summary.status(settings)["images_no_face"] == 1
    assert _summarised(settings) == _catalog(settings)


def test_a_name_patches_the_summary_it_finds(synthetic: Settings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A correction that only names (`faceidx name`) brings the summary up to date from the
    one it finds current, without reading every count and person again, and what it writes
    is what the catalog says: a name on a person in the list, on one far down it (it moves up
    to the named), on one beyond the rows kept; an undo (not a name) reads everything."""
    settings = synthetic
    monkeypatch.setattr(summary, "PEOPLE_ROWS", 4)  # the list is cut: some people are beyond
    (settings.home / summary.FILE).unlink(missing_ok=True)
    summary.status(settings)
    reads: list[int] = []
    read = summary._read
    monkeypatch.setattr(summary, "_read", lambda *a: reads.append(1) or read(*a))
    everyone = service.people_top(settings, None)[0]
    assert len(everyone) > 4
    named = next(r for r in everyone if r["name"] is not None)
    beyond = everyone[-1]
    for cluster, name in ((named["cluster_id"], "Ada"), (everyone[3]["cluster_id"], "Bo"),
                          (beyond["cluster_id"], "Cy"), (beyond["cluster_id"], "Cyd")):
        corrections.rename(settings, cluster, name)
        assert summary.load(settings) is not None
        assert reads == [], name  # patched, not read again
        rows = summary.people_top(settings, 4)
        assert json.loads(json.dumps(rows)) == json.loads(json.dumps(
            service.people_top(settings, 4)))
        assert any(r["cluster_id"] == cluster and r["name"] == name for r in rows[0])
        assert _live(summary.status(settings, with_failures=True)) == \
            _live(service.status(settings, with_failures=True))
        assert summary.history(settings, 50) == [asdict(c) for c in
                                                 corrections.history(settings, 50)]
    corrections.undo(settings)
    assert reads == [1]
    assert json.loads(json.dumps(summary.people_top(settings, 4))) == json.loads(json.dumps(
        service.people_top(settings, 4)))


def _face_like(store: Store, settings: Settings) -> Any:
    """A copy of face 1 (its box, landmarks, score and embedding), as a FaceResult."""
    from indexer.types import FaceResult

    face = store.faces([1])[0]
    vector = store.embeddings([1])[1][0]
    return FaceResult(bbox=face.bbox, landmarks=face.landmarks, score=face.score,
                      embedding=vector)


def test_a_write_that_keeps_no_summary_is_never_hidden(synthetic: Settings) -> None:
    """A writer that does not keep the summary (an older faceidx, DuckDB's own shell) changes
    the catalog's stamp: readers then read the catalog."""
    settings = synthetic
    summary.status(settings)
    probe = ("import duckdb, sys\ncon = duckdb.connect(sys.argv[1])\n"
             "con.execute(\"UPDATE people SET name = 'Yuri' WHERE name = 'Synthetic Person 1'\")"
             "\ncon.close()")
    out = subprocess.run([sys.executable, "-c", probe, str(settings.catalog_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert summary.load(settings) is None
    assert _summarised(settings) == _catalog(settings)
    assert any(r["name"] == "Yuri" for r in summary.people_top(settings, 100)[0])


def test_a_broken_or_foreign_summary_reads_the_catalog(synthetic: Settings) -> None:
    settings = synthetic
    file = settings.home / summary.FILE
    truth = _catalog(settings)
    file.write_text("{not json")
    assert _summarised(settings) == truth
    data = json.loads(file.read_text())
    assert data["counts"]["faces"] == 400
    data["counts"]["faces"] = 7
    data["stamp"][0] += 1  # another catalog's stamp
    file.write_text(json.dumps(data))
    assert summary.status(settings)["faces"] == 400
    data = json.loads(file.read_text())
    data["format"] = summary.FORMAT + 1
    data["counts"]["faces"] = 7
    file.write_text(json.dumps(data))
    assert summary.status(settings)["faces"] == 400
    data = json.loads(file.read_text())
    del data["people"]
    file.write_text(json.dumps(data))
    assert summary.people_top(settings, 5)[0] == truth[1][0][:5]


def test_a_request_beyond_the_summary_reads_the_catalog(synthetic: Settings,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    settings = synthetic
    monkeypatch.setattr(summary, "PEOPLE_ROWS", 3)
    monkeypatch.setattr(summary, "HISTORY_ROWS", 1)
    (settings.home / summary.FILE).unlink(missing_ok=True)
    truth = _catalog(settings)
    assert len(truth[1][0]) > 3 and len(truth[2]) == 2
    assert _summarised(settings) == truth
    assert len(json.loads((settings.home / summary.FILE).read_text())["people"]) == 3


def test_no_summary_is_written_when_the_catalog_changed_while_it_was_read(
        synthetic: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = synthetic
    file = settings.home / summary.FILE
    file.unlink(missing_ok=True)
    real = summary.change_stamp
    calls = iter(range(1, 100))

    def moving(path: Path) -> tuple[int, ...]:  # a commit between every two looks
        return (*real(path), next(calls))

    monkeypatch.setattr(summary, "change_stamp", moving)
    assert summary.status(settings)["faces"] == 400
    assert not file.exists()


def test_opening_a_migrated_catalog_for_writing_writes_nothing(synthetic: Settings) -> None:
    """A writer's open (every correction's) no longer commits: reading through one leaves
    the catalog, and so a current summary, as they were."""
    settings = synthetic
    summary.status(settings)
    before = summary.change_stamp(settings.catalog_path)
    assert corrections.resolve_cluster(settings, "Synthetic Person 1") > 0
    with Store.open(settings) as store:
        assert store.schema_version() > 0
    assert summary.change_stamp(settings.catalog_path) == before
    assert summary.load(settings) is not None


def test_taking_the_stamp_keeps_duckdbs_lock(settings: Settings) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it, DuckDB's too:
    the stamp (which the web app takes while its threads have the catalog open) must not let
    another process open a catalog this one is writing."""
    build(settings, 50, "dlib", seed=1, named=1)
    probe = ("import duckdb, sys\ntry:\n    duckdb.connect(sys.argv[1]).close()\n"
             "    print('opened')\nexcept duckdb.IOException:\n    print('refused')")
    with Store.open(settings) as store:
        store.cluster_names()  # the catalog is open for writing in this process
        for _ in range(2):
            summary.change_stamp(settings.catalog_path)
        out = subprocess.run([sys.executable, "-c", probe, str(settings.catalog_path)],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "refused", out.stderr


WRITER = """
import sys
from indexer import corrections, settings as settings_mod
from indexer.store import Store
settings = settings_mod.load({"home": sys.argv[1]})
me, cluster = sys.argv[2], sys.argv[3]
for i in range(6):
    corrections.rename(settings, cluster, f"Writer {me}.{i}")
    with Store.open(settings, keep_open=False) as store:
        with store.transaction() as con:
            image = store.upsert_image(con, path=f"synthetic://w{me}/{i}.jpg", size=1,
                                       mtime=0.0, content_hash=f"w{me}-{i}", status="ok")
        if i % 2:
            with store.transaction() as con:
                store.remove_images(con, [image])
"""


def test_concurrent_writers_leave_a_true_summary(synthetic: Settings) -> None:
    """Writers in three processes (corrections, photos added and removed, the daemon's way
    of holding the catalog per batch) beside a reader: whenever the summary is current it
    says what the catalog says, and after the last writer it is current."""
    settings = synthetic
    clusters = [r["cluster_id"] for r in summary.people_top(settings, 100)[0]
                if r["name"] is None][:3]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(settings.home), str(n),
                                 str(c)], cwd=REPO, env=env, stderr=subprocess.PIPE,
                                text=True) for n, c in enumerate(clusters)]
    checked, done = 0, False
    while not done:
        done = all(w.poll() is not None for w in writers)
        stamp = summary.change_stamp(settings.catalog_path)
        data = summary.load(settings)
        if data is None:
            continue
        store = Store.open(settings, read_only=True)
        try:
            with store.snapshot():
                truth = summary._read(store)
        finally:
            store.close(save=False)
        if summary.change_stamp(settings.catalog_path) == stamp:  # no commit in between
            assert {k: v for k, v in data.items() if k != "stamp"} == truth
            checked += 1
    for w in writers:
        assert w.wait() == 0, w.stderr.read() if w.stderr else ""
    assert checked > 0
    assert summary.load(settings) is not None
    assert _summarised(settings) == _catalog(settings)
    assert summary.status(settings)["images_no_face"] == 3 * 3
    assert len([c for c in summary.history(settings, 50) if c["kind"] == "name"]) == 2 + 18
