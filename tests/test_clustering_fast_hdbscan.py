import hdbscan
import numpy as np
import pytest
from hdbscan.plots import CondensedTree
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score

from indexer.clustering.fast_hdbscan import HdbscanConfig, fast_hdbscan
from indexer.clustering.knn import build_knn
from indexer.clustering.mst import core_distances, mutual_reachability_mst
from indexer.clustering.synthetic import make_identities


@pytest.fixture(scope="module")
def faces():
    # A photo-library-like set: ~1000 identities of 1-50 faces, 30% singletons, 128-d.
    return make_identities(2500, 128, seed=11)


def same_partition(a, b) -> bool:
    """Equal up to renaming clusters, with -1 kept as -1."""
    if not np.array_equal(a < 0, b < 0):
        return False
    pairs = set(zip(a[a >= 0].tolist(), b[b >= 0].tolist(), strict=True))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def is_spanning_tree(mst, n) -> bool:
    a, b = mst[:, 0].astype(int), mst[:, 1].astype(int)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return len(mst) == n - 1 and connected_components(graph, directed=False)[0] == 1


@pytest.mark.parametrize(("min_cluster_size", "knn_k"), [(2, 24), (3, 24), (2, 3), (5, 2)])
def test_labels_equal_exact_hdbscan(faces, min_cluster_size, knn_k):
    # A tiny knn_k forces most of the tree through the dense completion path.
    x = faces.embeddings
    config = HdbscanConfig(min_cluster_size=min_cluster_size, min_samples=1, knn_k=knn_k)
    ours = fast_hdbscan(x, config)
    ref = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=1).fit(x)
    assert ours.exact
    assert adjusted_rand_score(ref.labels_, ours.labels) == 1.0
    assert same_partition(ref.labels_, ours.labels)
    assert ours.labels.max() > 50  # the data really has many clusters


def test_spanning_tree_is_exact_for_larger_min_samples(faces):
    # With min_samples > 1 mutual reachability has exact ties (a point's edges to its nearest
    # neighbours all weigh its core distance): any minimum tree is valid, and which tied edge
    # comes first may move a tied point between clusters. The tree's weights must match.
    x = faces.embeddings
    ours = fast_hdbscan(x, HdbscanConfig(min_cluster_size=3, min_samples=3))
    ref = hdbscan.HDBSCAN(min_cluster_size=3, min_samples=3, gen_min_span_tree=True).fit(x)
    ref_w = np.sort(ref._min_spanning_tree[:, 2])
    assert is_spanning_tree(ours.mst, len(x))
    np.testing.assert_allclose(np.sort(ours.mst[:, 2]), ref_w, rtol=0, atol=1e-9)
    assert adjusted_rand_score(ref.labels_, ours.labels) > 0.97


def test_core_distance_counts_like_hdbscan():
    x = np.array([[0.0], [1.0], [3.0], [6.0]], dtype=np.float32)
    knn = build_knn(x, 3)
    # min_samples=2: the 2nd nearest *other* point (hdbscan queries k=3 including self).
    assert core_distances(knn, 2).tolist() == [3.0, 2.0, 3.0, 5.0]
    assert core_distances(knn, 1).tolist() == [1.0, 1.0, 2.0, 3.0]


def test_approximate_completion_still_gives_one_tree(faces):
    x = faces.embeddings
    knn = build_knn(x, 4)
    core = core_distances(knn, 1)
    approx = mutual_reachability_mst(x, knn, core, dense_completion=False)
    exact = mutual_reachability_mst(x, knn, core, dense_completion=True)
    assert is_spanning_tree(approx, len(x))
    assert approx[:, 2].sum() >= exact[:, 2].sum() - 1e-9
    assert approx[:, 2].sum() <= exact[:, 2].sum() * 1.05


def test_duplicates_and_tiny_inputs():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    x = np.concatenate([base, base[:5], base[:5]])  # exact duplicates: zero distances
    out = fast_hdbscan(x)
    assert is_spanning_tree(out.mst, len(x))
    for i in range(5):
        assert out.labels[i] >= 0 and out.labels[i] == out.labels[30 + i] == out.labels[35 + i]
    assert fast_hdbscan(x[:1]).labels.tolist() == [-1]
    assert fast_hdbscan(x[:0]).labels.tolist() == []
    assert len(fast_hdbscan(x[:2]).labels) == 2


def test_condensed_tree_is_the_librarys_format(faces):
    out = fast_hdbscan(faces.embeddings[:500])
    assert set(out.condensed_tree.dtype.names) == {"parent", "child", "lambda_val", "child_size"}
    plot_tree = CondensedTree(out.condensed_tree, out.labels)
    assert plot_tree.to_numpy().shape == out.condensed_tree.shape


def test_ivf_knn_finds_the_near_neighbours(faces):
    # Above KnnConfig.exact_max_faces (20k by default) the kNN graph comes from the batched IVF
    # search and the spanning tree is approximate (HdbscanConfig.exact_max_faces); both forced
    # here on 2,500 faces with the default list count and probes. The neighbours within the
    # attach distance (those clustering joins) are all but all found. Labels move against
    # exact HDBSCAN on these synthetic faces (isotropic noise: many near-equal far neighbours):
    # measured ARI 0.89, against 0.98 for the approximate tree on the exact graph.
    from indexer.clustering.knn import KnnConfig, neighbour_recall

    x = faces.embeddings
    exact = build_knn(x, 24)
    approx = build_knn(x, 24, KnnConfig(exact_max_faces=100))
    assert exact.exact and not approx.exact
    assert neighbour_recall(x, exact, 500) == 1.0
    assert neighbour_recall(x, approx, 500, within=0.33) >= 0.99
    ref = fast_hdbscan(x, HdbscanConfig(min_cluster_size=2, min_samples=1), knn=exact).labels
    scaled = HdbscanConfig(min_cluster_size=2, min_samples=1, exact_max_faces=100)
    ours = fast_hdbscan(x, scaled, knn=approx).labels
    assert adjusted_rand_score(ref, ours) >= 0.85


def test_ivf_knn_graph_is_sorted_without_self_and_its_distances_are_true(faces):
    # The IVF graph is written over the search's own (N, k + 1) arrays (int32 and float32):
    # each row holds k distinct other points, nearest first, at their true distances.
    from indexer.clustering.knn import KnnConfig

    x = faces.embeddings
    n = len(x)
    graph = build_knn(x, 24, KnnConfig(exact_max_faces=100))
    assert graph.indices.shape == graph.distances.shape == (n, 24)
    assert (graph.indices >= 0).all()
    assert not (graph.indices == np.arange(n)[:, None]).any()
    assert all(len(set(row)) == 24 for row in graph.indices.tolist())
    assert (np.diff(graph.distances, axis=1) >= 0).all()
    true = np.linalg.norm(x[:, None, :].astype(np.float64) - x[graph.indices], axis=2)
    np.testing.assert_allclose(graph.distances, true, atol=1e-5)
