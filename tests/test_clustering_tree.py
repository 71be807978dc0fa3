"""tree.py against the hdbscan library's own condense_tree, compute_stability, get_clusters."""

import numpy as np
import pytest
from hdbscan._hdbscan_linkage import label
from hdbscan._hdbscan_tree import compute_stability, condense_tree, get_clusters

from indexer.clustering.fast_hdbscan import HdbscanConfig, fast_hdbscan
from indexer.clustering.synthetic import make_identities
from indexer.clustering.tree import condense, select_eom, single_linkage, stability


def random_hierarchy(n: int, rng: np.random.Generator, *, chain: bool, ties: bool,
                     zeros: bool) -> np.ndarray:
    """A single-linkage tree over a random spanning tree: bushy or chain-like (the deep trees
    of real data), with tied and zero weights if asked."""
    a = np.arange(1, n)
    if chain:
        b = np.maximum(a - 1 - (rng.random(n - 1) < 0.3) * rng.integers(0, 5, n - 1), 0)
    else:
        b = (rng.random(n - 1) * a).astype(np.int64)
    w = rng.random(n - 1)
    if ties:
        w = np.round(w * 5) / 5
    if zeros:
        w[rng.random(n - 1) < 0.1] = 0.0
    mst = np.column_stack([a, b, w]).astype(np.float64)
    mst = mst[np.argsort(mst[:, 2], kind="stable")]
    hierarchy = label(mst)
    np.testing.assert_array_equal(single_linkage(mst), hierarchy)
    return hierarchy


def assert_same_as_library(hierarchy: np.ndarray, min_cluster_size: int) -> None:
    ref = condense_tree(hierarchy, min_cluster_size)
    ours = condense(hierarchy, min_cluster_size)
    assert ours.dtype == ref.dtype
    for field in ref.dtype.names:  # row for row, in the library's order
        np.testing.assert_array_equal(ours[field], ref[field])
    ref_stability = compute_stability(ref)
    np.testing.assert_array_equal(stability(ours),
                                  [ref_stability[k] for k in sorted(ref_stability)])
    ref_labels, ref_probs, _ = get_clusters(ref, ref_stability, "eom", False, False, 0.0)
    labels, probs = select_eom(ours)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(probs, ref_probs)


@pytest.mark.parametrize("seed", range(4))
def test_random_trees_equal_the_library(seed):
    rng = np.random.default_rng(seed)
    for trial in range(40):
        n = int(rng.integers(2, 600))
        hierarchy = random_hierarchy(n, rng, chain=trial % 2 == 0, ties=trial % 3 == 0,
                                     zeros=trial % 5 == 0)
        for min_cluster_size in (2, 3, 7):
            assert_same_as_library(hierarchy, min_cluster_size)


def test_a_deep_chain_equals_the_library():
    # One point joins at a time: depth N, the case per-level walks are slow on.
    n = 3000
    rng = np.random.default_rng(1)
    mst = np.column_stack([np.arange(1, n), np.arange(n - 1), np.sort(rng.random(n - 1))])
    assert_same_as_library(label(mst), 2)


def test_face_like_data_equals_the_library():
    x = make_identities(3000, 64, seed=5).embeddings
    out = fast_hdbscan(x, HdbscanConfig(min_cluster_size=2, min_samples=1))
    hierarchy = label(out.mst)
    for min_cluster_size in (2, 4):
        assert_same_as_library(hierarchy, min_cluster_size)
    assert out.labels.max() > 100


@pytest.mark.parametrize("config", [HdbscanConfig(cluster_selection_method="leaf"),
                                    HdbscanConfig(cluster_selection_epsilon=0.3),
                                    HdbscanConfig(min_cluster_size=50, allow_single_cluster=True)])
def test_other_selections_go_through_the_library(config):
    x = make_identities(800, 32, seed=2).embeddings
    out = fast_hdbscan(x, config)
    ref = condense_tree(label(out.mst), config.min_cluster_size)
    ref_labels, ref_probs, _ = get_clusters(
        ref, compute_stability(ref), config.cluster_selection_method,
        config.allow_single_cluster, False, config.cluster_selection_epsilon)
    np.testing.assert_array_equal(out.labels, ref_labels)
    np.testing.assert_array_equal(out.probabilities, ref_probs)
