import itertools

import numpy as np
import pytest

from indexer.clustering.metrics import bcubed_scores, pairwise_scores, score


def brute_force(truth, pred):
    """O(N^2) reference with -1 turned into singletons."""

    def fix(labels):
        labels = list(labels)
        out, nxt = [], max(labels) + 1
        for lab in labels:
            out.append(nxt if lab < 0 else lab)
            nxt += lab < 0
        return out

    t, p = fix(truth), fix(pred)
    n = len(t)
    tp = sum(1 for i, j in itertools.combinations(range(n), 2) if t[i] == t[j] and p[i] == p[j])
    pp = sum(1 for i, j in itertools.combinations(range(n), 2) if p[i] == p[j])
    tt = sum(1 for i, j in itertools.combinations(range(n), 2) if t[i] == t[j])
    bp = np.mean(
        [
            sum(p[j] == p[i] and t[j] == t[i] for j in range(n))
            / sum(p[j] == p[i] for j in range(n))
            for i in range(n)
        ]
    )
    br = np.mean(
        [
            sum(p[j] == p[i] and t[j] == t[i] for j in range(n))
            / sum(t[j] == t[i] for j in range(n))
            for i in range(n)
        ]
    )
    return (tp / pp if pp else 1.0, tp / tt if tt else 1.0, bp, br)


def test_hand_worked_example():
    truth = [0, 0, 0, 1, 1]
    pred = [0, 0, 1, 1, -1]
    # Pairs: true {01,02,12,34}=4, predicted {01,23}=2, both {01}=1.
    p, r, f = pairwise_scores(truth, pred)
    assert (p, r) == (0.5, 0.25)
    assert f == pytest.approx(1 / 3)
    # BCubed precision (1+1+1/2+1/2+1)/5, recall (2/3+2/3+1/3+1/2+1/2)/5.
    bp, br, bf = bcubed_scores(truth, pred)
    assert bp == pytest.approx(0.8)
    assert br == pytest.approx(8 / 15)
    assert bf == pytest.approx(0.64)


def test_outliers_are_singletons_in_prediction_and_truth():
    truth = np.array([0, 0, 1, 1, 2, 3])
    with_noise = np.array([5, 5, 7, 7, -1, -1])
    with_singletons = np.array([5, 5, 7, 7, 8, 9])
    assert score(truth, with_noise).bcubed_f1 == 1.0
    assert score(truth, with_noise).pairwise_f1 == 1.0
    assert score(truth, with_noise).nmi == pytest.approx(1.0)
    # Two -1 outliers must never count as one cluster together.
    a, b = score(truth, with_noise), score(truth, with_singletons)
    assert (a.pairwise_f1, a.bcubed_f1, a.nmi) == (b.pairwise_f1, b.bcubed_f1, b.nmi)
    assert score(truth, [5, 5, 7, 7, 8, 8]).bcubed_precision < 1.0
    assert a.outlier_fraction == pytest.approx(2 / 6) and a.n_clusters == 2
    # -1 in the truth (unknown people) also means singletons.
    assert score([0, 0, -1, -1], [1, 1, -1, -1]).bcubed_f1 == 1.0
    assert score([0, 0, -1, -1], [1, 1, 2, 2]).bcubed_precision < 1.0


def test_all_outliers_prediction():
    truth = [0, 0, 0, 1]
    p, r, _ = pairwise_scores(truth, [-1, -1, -1, -1])
    assert (p, r) == (1.0, 0.0)
    bp, br, _ = bcubed_scores(truth, [-1, -1, -1, -1])
    assert bp == 1.0
    assert br == pytest.approx((1 / 3 * 3 + 1) / 4)


def test_string_identities_and_counts():
    s = score(["ann", "ann", "bob", "cy"], [0, 0, 0, -1])
    assert s.n_clusters == 1
    assert s.outlier_fraction == 0.25
    assert s.pairwise_precision == pytest.approx(1 / 3)
    assert s.pairwise_recall == 1.0


def test_matches_brute_force_on_random_labelings():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        truth = rng.integers(-1, 6, n)
        pred = rng.integers(-1, 5, n)
        p, r, _ = pairwise_scores(truth, pred)
        bp, br, _ = bcubed_scores(truth, pred)
        ref = brute_force(truth, pred)
        assert (p, r, bp, br) == pytest.approx(ref)


def test_large_input_is_linear():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 50_000, 1_000_000)
    pred = np.where(rng.random(1_000_000) < 0.1, -1, truth)
    s = score(truth, pred)
    assert s.pairwise_precision == 1.0
    assert 0.5 < s.bcubed_recall < 1.0
