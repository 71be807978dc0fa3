import numpy as np
import pytest

from indexer.clustering.reconcile import ReconcileError, reconcile


def run(new, prev, named=(), pinned=None, rejected=(), next_id=100):
    return reconcile(np.array(new), np.array(prev), named, pinned or {}, rejected, next_id)


def test_majority_keeps_old_id_and_others_get_fresh_ids():
    prev = [1, 1, 1, 1, 2, 2, -1, -1]
    new = [7, 7, 7, 8, 9, 9, 8, 8]
    final, rep = run(new, prev, next_id=10)
    assert final[:3].tolist() == [1, 1, 1]  # 3 of 4 faces of old 1
    assert final[4:6].tolist() == [2, 2]
    assert final[3] == final[6] == final[7] == 10  # fresh, from next_id
    assert rep.kept == (1, 2) and rep.new == (10,) and rep.next_id == 11
    assert rep.changed_faces == 3


def test_half_is_not_a_majority():
    final, rep = run([5, 5, 6, 6], [1, 1, 1, 1], next_id=3)
    assert set(final.tolist()) == {3, 4}
    assert rep.dissolved == (1,)


def test_one_to_one_conflict_goes_to_larger_overlap():
    # New cluster 0 holds all of old 1 (2 faces) and all of old 2 (3 faces): it merges them.
    final, rep = run([0, 0, 0, 0, 0], [1, 1, 2, 2, 2], next_id=9)
    assert set(final.tolist()) == {2}
    assert rep.dissolved == (1,)
    assert rep.changed_faces == 2


def test_named_id_is_never_deleted_when_merged_away():
    # Same merge, but old 1 carries a name: its faces that stayed together keep id 1.
    final, rep = run([0, 0, 0, 0, 0], [1, 1, 2, 2, 2], named={1}, next_id=9)
    assert final.tolist() == [1, 1, 2, 2, 2]
    assert 1 in rep.kept and 1 in rep.named_fallback and 1 not in rep.dissolved


def test_named_id_keeps_pinned_faces_when_dissolved_into_noise():
    final, rep = run([-1, -1, -1], [4, 4, 4], named={4}, pinned={2: 4})
    assert final.tolist() == [-1, -1, 4]
    assert rep.dissolved == ()
    assert 4 in rep.kept


def test_named_id_with_nothing_left_is_reported_not_dissolved():
    final, rep = run([-1, -1], [4, 4], named={4})
    assert final.tolist() == [-1, -1]
    assert rep.named_fallback == (4,) and rep.dissolved == ()


def test_pinned_faces_override_the_algorithm():
    final, _ = run([0, 0, 0, 1, 1], [3, 3, 3, 5, 5], pinned={0: 5, 4: 42})
    assert final[0] == 5 and final[4] == 42
    assert final[1] == final[2] == 3


def test_rejected_face_landing_in_that_cluster_becomes_outlier():
    final, _ = run([0, 0, 0, 0], [3, 3, 3, -1], rejected=[(3, 3), (1, 8)])
    assert final.tolist() == [3, 3, 3, -1]
    final, _ = run([0, 0, 0, 0], [3, 3, 3, 3], rejected=[(2, 3)])
    assert final.tolist() == [3, 3, -1, 3]


def test_pinned_and_rejected_to_same_cluster_is_an_error():
    with pytest.raises(ReconcileError):
        run([0, 0], [1, 1], pinned={0: 1}, rejected=[(0, 1)])


def test_fresh_ids_never_collide_with_existing_ids():
    final, rep = run([0, 0, 1, 1], [-1, -1, -1, -1], pinned={}, named={50}, next_id=3)
    assert set(final.tolist()) == {51, 52}
    assert rep.next_id == 53


def test_unchanged_clustering_changes_nothing():
    prev = np.array([1, 1, 2, 2, -1, 3, 3])
    final, rep = run(prev.copy(), prev)
    assert final.tolist() == prev.tolist()
    assert rep.changed_faces == 0 and rep.new == () and rep.dissolved == ()
