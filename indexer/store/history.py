"""The correction history: each correction runs in one transaction that also records the facts
it changed (before and after), so `undo` can put them back, even after a recluster.

What is recorded, for every face the correction touched: its cluster, assignment distance and
reason, pin and rejections, before and after; the people rows (names) and cluster rows of the
clusters involved; and for each cluster a face left, up to ANCHORS of its members that stayed.

Undo restores the face-level facts (pins, rejections, names) as they were. Cluster ids a
recluster may have renumbered are not trusted: a face goes back to the cluster that its former
companions (the anchors) are in now; a named or pinned cluster keeps its id (reclusters never
change those); a cluster the correction deleted (a merge's second person) comes back under its
old id when that id is still free, else under a fresh one.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import Conflict, NothingToUndo
from .base import bump_generation
from .engine import duckdb
from .faces import id_filter as _filter
from .rows import Change

log = logging.getLogger(__name__)

ANCHORS = 50
"""Members kept per cluster to find it again after a recluster renumbered it."""

Facts = dict[str, Any]


class HistoryMixin:
    # ------------------------------------------------------------------ recording
    def record_correction(self, kind: str, summary: str,
                          op: Callable[[duckdb.DuckDBPyConnection, Facts], int | None], *,
                          clusters: Iterable[int] = (), faces: Iterable[int] = (),
                          names_only: bool = False) -> Change:
        """Run `op` in one transaction, record what it changed, and return the history row.

        `op` gets the connection and the facts read before it (`_facts`: every member of
        `clusters`, among others), and returns the cluster the user is left looking at (for a
        split, the new person).
        `clusters` and `faces` name what it may touch; the faces' clusters are added.
        `names_only`: `op` changes no cluster's members, size or medoid, only the names of
        `clusters` (and pins), which lets the summary be patched (StoreBase.transaction).
        """
        clusters = [int(c) for c in clusters]
        with self.transaction(  # type: ignore[attr-defined]
                names_of=clusters if names_only else None) as con:
            face_ids = sorted({int(f) for f in faces})
            given, params = _filter("face_id", face_ids)
            cluster_ids = set(int(c) for c in clusters) | ({
                int(r[0]) for r in con.execute(
                    f"SELECT DISTINCT cluster_id FROM faces WHERE {given} "
                    "AND cluster_id IS NOT NULL", params).fetchall()} if face_ids else set())
            before = self._facts(con, sorted(cluster_ids), face_ids)
            focus = op(con, before)
            if focus is not None:
                cluster_ids.add(int(focus))
            after = self._facts(con, sorted(cluster_ids), [int(f) for f in before["faces"]],
                                only_these=True, members=before["faces"] if names_only
                                else None)
            state = _diff(before, after)
            state["focus_before"] = _focus_before(kind, before, after, state, focus)
            row = con.execute(
                "INSERT INTO history (change_id, kind, summary, cluster_id, state) "
                "SELECT coalesce(max(change_id), 0) + 1, ?, ?, ?, ? FROM history "
                "RETURNING change_id, kind, summary, made_at, cluster_id, undone",
                [kind, summary, focus, json.dumps(state)]).fetchone()
            assert row is not None
            _set_head(con, int(row[0]))
            return _change_row(row)

    def _facts(self, con: duckdb.DuckDBPyConnection, cluster_ids: list[int],
               face_ids: list[int], *, only_these: bool = False,
               members: Facts | None = None) -> Facts:
        """The user-visible facts about these clusters and faces, as JSON-ready values: of
        the clusters' members, the faces pinned to or rejected from them, and `face_ids`
        (with only_these, of `face_ids` alone). The members come from one scan of the faces'
        cluster column (the clusters' ids as literals, which DuckDB filters in the scan), the
        other faces by id; pins and rejections are small tables. `members` (with only_these):
        the faces' facts read before a correction that moved no face, whose clusters,
        distances and reasons stand (only pins, rejections and names are read again).
        Three statements in the common case (each costs a light command a few ms): the
        members, the pins and rejections of them and of the clusters, the clusters and their
        people."""
        where, params = _filter("cluster_id", cluster_ids)
        if members is not None and only_these:
            rows = {int(f): list(v[:3]) for f, v in members.items()}
        else:
            rows = {int(r[0]): list(r[1:]) for r in con.execute(
                "SELECT face_id, cluster_id, assign_distance, assign_reason FROM faces WHERE "
                + where, params).fetchall()}
        known = set(face_ids) | (set() if only_these else set(rows))
        # the pins and rejections of these faces and, unless only_these, of any face pinned
        # to or rejected from the clusters (it is one of the faces to record)
        on, on_params = _filter("face_id", sorted(known))
        if not only_these:
            on, on_params = f"({on} OR {where})", on_params + params
        marks = _marks(con, on, on_params)
        wanted = known | (set() if only_these else {fid for _, fid, _ in marks})
        missing = sorted(wanted - set(rows))
        if missing:
            by_id, by_id_params = _filter("face_id", missing)
            rows.update({int(r[0]): list(r[1:]) for r in con.execute(
                "SELECT face_id, cluster_id, assign_distance, assign_reason FROM faces WHERE "
                + by_id, by_id_params).fetchall()})
        found = sorted(set(missing) - known)  # their pins and rejections of other clusters
        if found:
            marks = sorted(set(marks) | set(_marks(con, *_filter("face_id", found))))
        ids = sorted(f for f in wanted if f in rows)
        pins = {fid: cid for rejected, fid, cid in marks if not rejected}
        faces: dict[str, list[Any]] = {}
        for fid in ids:
            cid, dist, reason = rows[fid]
            faces[str(fid)] = [cid, None if dist is None else float(dist), reason,
                               pins.get(fid), []]
        for rejected, fid, cid in marks:
            if rejected and str(fid) in faces:
                faces[str(fid)][4].append(int(cid))
        clusters: dict[str, Any] = {}
        people: dict[str, list[Any]] = {}
        for table, key, a, b in con.execute(
                f"SELECT 'c', cluster_id, medoid_face_id, NULL::VARCHAR FROM clusters "
                f"WHERE {where} UNION ALL SELECT 'p', person_id, cluster_id, name FROM people "
                f"WHERE {where}", params + params).fetchall():
            if table == "c":
                clusters[str(key)] = a
            else:
                people[str(key)] = [b, a]
        return {"faces": faces, "clusters": clusters, "people": people}

    # ------------------------------------------------------------------ reading
    def history(self, limit: int = 50) -> list[Change]:
        """The newest `limit` changes, newest first."""
        with self._read() as con:  # type: ignore[attr-defined]
            rows = con.execute(
                "SELECT change_id, kind, summary, made_at, cluster_id, undone FROM history "
                "ORDER BY change_id DESC LIMIT ?", [int(limit)]).fetchall()
        return [_change_row(r) for r in rows]

    def _change(self, con: duckdb.DuckDBPyConnection, change_id: int) -> Change:
        row = con.execute("SELECT change_id, kind, summary, made_at, cluster_id, undone "
                          "FROM history WHERE change_id = ?", [change_id]).fetchone()
        assert row is not None
        return _change_row(row)

    # ------------------------------------------------------------------ undo
    def undo_last(self) -> Change:
        """Take back the newest correction not yet undone; returns the new 'undo' row."""
        with self.transaction() as con:  # type: ignore[attr-defined]
            row = con.execute(
                "SELECT change_id, summary, state FROM history "
                "WHERE kind <> 'undo' AND NOT undone ORDER BY change_id DESC LIMIT 1").fetchone()
            if row is None:
                raise NothingToUndo(f"nothing to undo in {self.settings.home}; "  # type: ignore[attr-defined]
                                    "see `faceidx history`")
            change_id, summary, state_json = int(row[0]), str(row[1]), json.loads(row[2])
            focus = _Restorer(self, con, state_json).run()
            con.execute("UPDATE history SET undone = true WHERE change_id = ?", [change_id])
            new_id = self._next_id(con, "history", "change_id")  # type: ignore[attr-defined]
            con.execute("INSERT INTO history (change_id, kind, summary, cluster_id, undoes) "
                        "VALUES (?, 'undo', ?, ?, ?)",
                        [new_id, f"undid: {summary}", focus, change_id])
            _set_head(con, new_id)
            return self._change(con, new_id)


def _set_head(con: duckdb.DuckDBPyConnection, change_id: int) -> None:
    """meta history_head: the newest change's id. Every change to the history adds a row
    (an undo marks one undone and adds its own), so a reader that has the head (read with the
    model when the store opens: StoreBase.history_head) knows whether the history changed
    without reading it. Every correction changes clusters too: this also bumps meta
    clusters_generation (base.bump_generation), in the same statement when both keys are
    there (an update costs a light command a fraction of an INSERT OR REPLACE)."""
    row = con.execute(
        "UPDATE meta SET value = CASE key WHEN 'history_head' THEN $head "
        "ELSE CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) END "
        "WHERE key IN ('history_head', 'clusters_generation')",
        {"head": str(change_id)}).fetchone()
    if row is None or int(row[0]) < 2:  # a key missing (a bump too many does no harm)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('history_head', ?)", [str(change_id)])
        bump_generation(con)


class _Restorer:
    """Puts one recorded correction's before-facts back (see the module docstring)."""

    def __init__(self, store: Any, con: duckdb.DuckDBPyConnection, state: dict[str, Any]
                 ) -> None:
        self.store, self.con, self.state = store, con, state
        self.mapping: dict[int, int] = {}
        self.fresh_next: int | None = None
        before, after = state["clusters_before"], state["clusters_after"]
        self.removed = {int(c) for c in before} - {int(c) for c in after}
        self.created = {int(c) for c in after} - {int(c) for c in before}
        self.named = {int(c) for _, c in state["people_before"].values() if c is not None}

    def run(self) -> int | None:
        con = self.con
        touched: set[int] = set()
        for b, a in self.state["faces"].values():
            touched |= {int(c) for c in (a[0], b[0]) if c is not None}
        current = {int(f): c for f, c in con.execute(
            "SELECT face_id, cluster_id FROM faces WHERE face_id IN (SELECT unnest(?))",
            [[int(f) for f in self.state["faces"]]]).fetchall()}
        touched |= {int(c) for c in current.values() if c is not None}
        # Clusters the correction deleted come back first, so their ids are taken.
        for x in sorted(self.removed):
            cid = self.resolve(x)
            medoid = self.state["clusters_before"][str(x)]
            con.execute("INSERT OR IGNORE INTO clusters (cluster_id, size, medoid_face_id) "
                        "VALUES (?, 0, ?)", [cid, medoid])
        self._restore_people()
        for fid_s, (b, a) in self.state["faces"].items():
            fid = int(fid_s)
            if fid not in current:
                continue  # the photo was removed meanwhile
            self._restore_face(fid, b, a)
            for c in (b[0], b[3]):
                if c is not None:
                    touched.add(self.resolve(int(c)))
        touched |= set(self.mapping.values())
        for cid in sorted(touched | self.created):
            self.store._refresh_cluster(con, cid)
        for cid in sorted(self.created):
            con.execute("DELETE FROM clusters WHERE cluster_id = ? AND size = 0 AND cluster_id "
                        "NOT IN (SELECT cluster_id FROM people WHERE cluster_id IS NOT NULL)",
                        [cid])
        focus = self.state.get("focus_before")
        return None if focus is None else self.resolve(int(focus))

    def _restore_people(self) -> None:
        con = self.con
        before, after = self.state["people_before"], self.state["people_after"]
        for pid in set(after) - set(before):
            con.execute("DELETE FROM people WHERE person_id = ?", [int(pid)])
        for pid, (name, cid) in before.items():
            target = None if cid is None else self.resolve(int(cid))
            holder = con.execute("SELECT person_id FROM people WHERE name = ?",
                                 [name]).fetchone()
            if holder is not None and int(holder[0]) != int(pid):
                raise Conflict(f"cannot undo: the name {name!r} now belongs to another person "
                               f"(person {holder[0]}); rename that one first")
            if con.execute("SELECT 1 FROM people WHERE person_id = ?",
                           [int(pid)]).fetchone() is None:
                con.execute("INSERT INTO people (person_id, name, cluster_id) VALUES (?, ?, ?)",
                            [int(pid), name, target])
            else:
                con.execute("UPDATE people SET name = ?, cluster_id = ? WHERE person_id = ?",
                            [name, target, int(pid)])

    def _restore_face(self, fid: int, b: list[Any], a: list[Any]) -> None:
        con = self.con
        b_cluster, b_dist, b_reason, b_pin, b_rej = b
        a_cluster, _, _, a_pin, a_rej = a
        if b_pin != a_pin:
            con.execute("DELETE FROM face_pins WHERE face_id = ?", [fid])
            if b_pin is not None:
                con.execute("INSERT INTO face_pins (face_id, cluster_id) VALUES (?, ?)",
                            [fid, self.resolve(int(b_pin))])
        for c in set(a_rej) - set(b_rej):
            con.execute("DELETE FROM face_rejections WHERE face_id = ? AND cluster_id = ?",
                        [fid, int(c)])
        for c in set(b_rej) - set(a_rej):
            con.execute("INSERT OR REPLACE INTO face_rejections (face_id, cluster_id) "
                        "VALUES (?, ?)", [fid, self.resolve(int(c))])
        if b_cluster != a_cluster:
            home = b_pin if b_pin is not None else b_cluster
            cid = None if home is None else self.resolve(int(home))
            con.execute("UPDATE faces SET cluster_id = ?, assign_distance = ?, "
                        "assign_reason = ? WHERE face_id = ?",
                        [cid, b_dist if cid is not None else None, b_reason, fid])

    def resolve(self, x: int) -> int:
        """Where cluster `x` (an id in the recorded before-state) lives now."""
        if x in self.mapping:
            return self.mapping[x]
        anchors = self.state["anchors"].get(str(x))
        if x in self.removed:
            cid = x if self._ours(x) else self._fresh()
        elif x in self.named or self._pinned(x):
            cid = x  # reclusters never renumber a named or pinned cluster
        elif anchors is None:  # no face left it: it was only the target
            cid = x if self._exists(x) or self._ours(x) else self._fresh()
        else:
            rows = self.con.execute(
                "SELECT cluster_id FROM faces WHERE face_id IN (SELECT unnest(?)) "
                "AND cluster_id IS NOT NULL", [[int(f) for f in anchors]]).fetchall()
            if rows:
                cid = Counter(int(r[0]) for r in rows).most_common(1)[0][0]
            elif self._ours(x):
                cid = x
            else:
                cid = self._fresh()
        self.mapping[x] = cid
        if cid != x:
            log.info("undo: cluster %d is now %d", x, cid)
        return cid

    def _exists(self, x: int) -> bool:
        return self.con.execute("SELECT 1 FROM clusters WHERE cluster_id = ?",
                                [x]).fetchone() is not None

    def _ours(self, x: int) -> bool:
        """No one but the faces going back to `x` uses that id now (it may be free)."""
        mine = [int(f) for f, (b, _) in self.state["faces"].items()
                if x in (b[0], b[3])]
        row = self.con.execute(
            "SELECT (SELECT count(*) FROM faces WHERE cluster_id = $x "
            "AND face_id NOT IN (SELECT unnest($mine))) "
            "+ (SELECT count(*) FROM people WHERE cluster_id = $x) "
            "+ (SELECT count(*) FROM face_pins WHERE cluster_id = $x "
            "AND face_id NOT IN (SELECT unnest($mine)))", {"x": x, "mine": mine}).fetchone()
        return row is not None and int(row[0]) == 0

    def _pinned(self, x: int) -> bool:
        return self.con.execute("SELECT 1 FROM face_pins WHERE cluster_id = ? LIMIT 1",
                                [x]).fetchone() is not None

    def _fresh(self) -> int:
        if self.fresh_next is None:
            row = self.con.execute(
                "SELECT max(c) FROM (SELECT max(cluster_id) AS c FROM clusters "
                "UNION ALL SELECT max(cluster_id) FROM faces "
                "UNION ALL SELECT max(cluster_id) FROM people "
                "UNION ALL SELECT max(cluster_id) FROM face_pins)").fetchone()
            self.fresh_next = (int(row[0]) if row and row[0] is not None else 0) + 1
        cid = self.fresh_next
        self.fresh_next += 1
        return cid


def _marks(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]
           ) -> list[tuple[bool, int, int]]:
    """(rejected?, face_id, cluster_id) of the pins (False) and rejections (True) that
    `where` keeps, in one statement, in order."""
    return [(bool(r), int(f), int(c)) for r, f, c in con.execute(
        f"SELECT false, face_id, cluster_id FROM face_pins WHERE {where} UNION ALL "
        f"SELECT true, face_id, cluster_id FROM face_rejections WHERE {where} "
        "ORDER BY 1, 2, 3", params + params).fetchall()]


def _diff(before: Facts, after: Facts) -> dict[str, Any]:
    """Only the faces whose facts changed, both states of the clusters and people involved,
    and anchors: members that stayed in each cluster a changed face left."""
    changed = {f: [before["faces"][f], after["faces"].get(f, before["faces"][f])]
               for f in before["faces"]
               if before["faces"][f] != after["faces"].get(f, before["faces"][f])}
    left = {b[0] for b, _ in changed.values() if b[0] is not None} | \
        {b[3] for b, _ in changed.values() if b[3] is not None}
    anchors: dict[str, list[int]] = {str(c): [] for c in left}
    for f, facts in before["faces"].items():
        c = facts[0]
        if c in left and f not in changed and len(anchors[str(c)]) < ANCHORS:
            anchors[str(c)].append(int(f))
    return {"faces": changed, "anchors": anchors,
            "clusters_before": before["clusters"], "clusters_after": after["clusters"],
            "people_before": before["people"], "people_after": after["people"]}


def _focus_before(kind: str, before: Facts, after: Facts, state: dict[str, Any],
                  focus: int | None) -> int | None:
    """The cluster to show the user after this change is undone."""
    removed = [int(c) for c in before["clusters"] if c not in after["clusters"]]
    if removed:
        return removed[0]  # a merge's second person comes back
    if kind in ("move", "split"):
        sources = [b[0] for b, _ in state["faces"].values() if b[0] is not None]
        if sources:
            return Counter(sources).most_common(1)[0][0]
    return focus


def _change_row(row: tuple[Any, ...]) -> Change:
    at = row[3]
    return Change(change_id=int(row[0]), kind=str(row[1]), summary=str(row[2]),
                  at=at.isoformat(timespec="seconds") if hasattr(at, "isoformat") else str(at),
                  cluster_id=None if row[4] is None else int(row[4]), undone=bool(row[5]))
