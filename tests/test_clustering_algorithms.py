import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from indexer.clustering import ALGORITHMS, ClusterParams, UnknownAlgorithmError, cluster, score
from indexer.clustering.knn import build_knn
from indexer.clustering.labels import compact
from indexer.clustering.refine import (
    _centroids,
    _close_pairs,
    _groups,
    attach_outliers,
    merge_close_clusters,
    split_far_members,
)
from indexer.clustering.synthetic import make_identities


@pytest.fixture(scope="module")
def faces():
    return make_identities(1500, 128, seed=5)


def test_algorithm_names():
    assert ALGORITHMS == ("hdbscan", "dbscan", "chinese-whispers", "kmeans", "agglomerative")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_finds_the_identities(faces, algorithm):
    params = ClusterParams(kmeans_k=len(np.unique(faces.identities)))
    result = cluster(faces.embeddings, algorithm, params)
    assert result.algorithm == algorithm
    assert result.labels.shape == (1500,) and result.labels.dtype == np.int64
    assert result.labels.min() >= -1
    sizes = np.bincount(result.labels[result.labels >= 0])
    assert (sizes >= 2).all()  # single faces are reported as -1, not as clusters
    assert result.seconds >= 0 and result.params
    assert (result.condensed_tree is not None) == (algorithm == "hdbscan")
    floor = 0.6 if algorithm == "kmeans" else 0.85
    assert score(faces.identities, result.labels).bcubed_f1 > floor


def test_default_recluster_refines_hdbscan(faces):
    plain = cluster(faces.embeddings, "hdbscan", ClusterParams(refine=False))
    refined = cluster(faces.embeddings)
    assert "refine" in refined.details and "refine" not in plain.details
    assert np.array_equal(refined.details["hdbscan_labels"], plain.labels)
    # Synthetic identities have no look-alikes, which is what the refinement corrects on real
    # faces (LFW: 0.927 -> 0.955); here it must at least not cost anything material.
    assert score(faces.identities, refined.labels).bcubed_f1 >= (
        score(faces.identities, plain.labels).bcubed_f1 - 0.01
    )
    assert sum(refined.details["refine"].values()) > 0


def test_dbscan_matches_sklearn_on_core_points(faces):
    x = faces.embeddings
    ours = cluster(x, "dbscan", ClusterParams(dbscan_eps=0.31, dbscan_min_samples=3)).labels
    ref = DBSCAN(eps=0.31, min_samples=3).fit(x)
    core = np.zeros(len(x), dtype=bool)
    core[ref.core_sample_indices_] = True
    assert adjusted_rand_score(ref.labels_[core], ours[core]) == 1.0
    assert np.array_equal(ours < 0, compact(ref.labels_) < 0)


def test_chinese_whispers_is_deterministic_given_seed(faces):
    a = cluster(faces.embeddings, "chinese-whispers", ClusterParams(seed=1)).labels
    b = cluster(faces.embeddings, "chinese-whispers", ClusterParams(seed=1)).labels
    assert np.array_equal(a, b)


def test_errors():
    x = make_identities(50, 8, seed=0).embeddings
    with pytest.raises(UnknownAlgorithmError):
        cluster(x, "spectral")
    with pytest.raises(ValueError, match="agglomerative_max_faces"):
        cluster(x, "agglomerative", ClusterParams(agglomerative_max_faces=10))
    with pytest.raises(ValueError, match="NaN"):
        cluster(np.full((3, 4), np.nan, dtype=np.float32))
    for algorithm in ALGORITHMS:
        assert cluster(x[:1], algorithm).labels.tolist() == [-1]


def line(*points):
    x = np.array(points, dtype=np.float32)
    return np.concatenate([x, np.zeros((len(x), 1), dtype=np.float32)], axis=1)


def test_split_far_members():
    x = line([0.0], [0.1], [0.2], [1.5])
    labels, n = split_far_members(x, np.array([0, 0, 0, 0]), distance=0.6)
    assert labels.tolist() == [0, 0, 0, -1] and n == 1


def test_attach_outliers_within_distance_only():
    x = line([0.0], [0.1], [0.4], [2.0])
    knn = build_knn(x, 3)
    labels, n = attach_outliers(knn, np.array([0, 0, -1, -1]), distance=0.45)
    assert labels.tolist() == [0, 0, 0, -1] and n == 1


def test_merge_close_clusters():
    x = line([0.0], [0.1], [0.3], [0.4], [3.0], [3.1])
    labels, n = merge_close_clusters(x, np.array([0, 0, 1, 1, 2, 2]), distance=0.5)
    assert labels[0] == labels[2] != labels[4] and n == 1


def test_close_pairs_are_exact_and_in_one_order_whatever_the_tiles():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(-1, 90, size=len(x))
    groups = _groups(labels)
    cents = np.stack([x[g].astype(np.float64).mean(axis=0) for g in groups])
    d = np.linalg.norm(cents[:, None, :] - cents[None, :, :], axis=2)
    i, j = np.triu_indices(len(groups), k=1)
    threshold = float(np.median(d[i, j]))  # half the pairs: many lie near the threshold
    want = d[i, j] < threshold
    for tile in (7, 32, len(groups)):  # tiles that split the triangle unevenly, and one
        rows, cols, dist = _close_pairs(x, groups, threshold, tile=tile)
        assert rows.tolist() == i[want].tolist() and cols.tolist() == j[want].tolist()
        assert np.allclose(dist, d[i[want], j[want]], rtol=0, atol=1e-12)
        bare = _close_pairs(x, groups, threshold, tile=tile, distances=False)
        assert bare[0].tolist() == rows.tolist() and bare[1].tolist() == cols.tolist()


def test_centroids_sum_each_group_in_order_however_it_is_blocked():
    rng = np.random.default_rng(1)
    # components from 1e-8 to 1: float64 sums of float32 values that depend on their order
    x = (rng.normal(size=(3000, 32)) * np.logspace(-8, 0, 32)).astype(np.float32)
    groups = [np.arange(0, 1000), np.arange(1000, 1003), rng.permutation(np.arange(1003, 3000))]
    want = np.stack([np.add.reduceat(x[g], [0], axis=0, dtype=np.float64)[0] / len(g)
                     for g in groups])
    for block in (64, 1000, 4096):  # the big groups summed a block of rows at a time, or whole
        assert np.array_equal(_centroids(x, groups, block=block), want)
