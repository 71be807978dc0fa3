"""HDBSCAN's tree to labels in linear time: condensed tree, stability, excess-of-mass selection.

The hdbscan library's `condense_tree`, `compute_stability` and `get_clusters` walk the tree
with per-level numpy calls and per-cluster breadth-first searches; with min_cluster_size 2
(about one cluster per ten faces) that took 232 s of a 1M-face recluster. Here the same
outputs are computed with whole-array operations:

- every node's breadth-first position (its depth, then its left-first preorder index) and its
  cluster head are path sums and path maxima up the single-linkage tree, computed by pointer
  jumping (log2(depth) passes over the nodes);
- the condensed tree's rows are then one lexsort away, in the library's row order, so
  cluster ids, lambdas and the float sums of the stabilities come out bit for bit the same;
- the excess-of-mass selection is one pass over the clusters, bottom-up, with the library's
  float32 rounding of a subtree's stability.

Labels, probabilities and the condensed tree equal the library's (tests/test_clustering_tree.py
checks them on random trees). Selection settings other than plain EOM (leaf, epsilon, single
cluster) hand the tree to the library's `get_clusters`.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

CONDENSED_DTYPE = np.dtype(
    [("parent", np.intp), ("child", np.intp), ("lambda_val", float), ("child_size", np.intp)]
)


@dataclass(frozen=True)
class TreeLabels:
    labels: NDArray[np.int64]
    probabilities: NDArray[np.float64]
    condensed_tree: NDArray[np.void]  # the library's structured format (CONDENSED_DTYPE)


def single_linkage(mst: NDArray[np.float64]) -> NDArray[np.float64]:
    """The single-linkage tree (scipy's format) of a spanning tree sorted by weight: the
    hdbscan library's `_hdbscan_linkage.label`, by scikit-learn's port of it
    (`make_single_linkage`), which gives the same rows 60x faster (the library's union-find
    indexes a numpy array from Python: 8 s at 100k faces)."""
    try:
        from sklearn.cluster._hdbscan._linkage import MST_edge_dtype, make_single_linkage
    except ImportError:  # a scikit-learn without it: the library's own
        from hdbscan._hdbscan_linkage import label

        return np.asarray(label(mst))
    edges = np.empty(len(mst), dtype=MST_edge_dtype)
    edges["current_node"] = mst[:, 0]
    edges["next_node"] = mst[:, 1]
    edges["distance"] = mst[:, 2]
    tree = make_single_linkage(edges)
    out = np.empty((len(mst), 4))
    out[:, 0], out[:, 1] = tree["left_node"], tree["right_node"]
    out[:, 2], out[:, 3] = tree["value"], tree["cluster_size"]
    return out


def _jump_sum(up: NDArray[np.int64], weight: NDArray[np.int64], root: int) -> NDArray[np.int64]:
    """Sum of `weight` over each node and its ancestors below `root` (root's weight is 0)."""
    total = weight.copy()
    anc = up.copy()
    while True:
        active = np.nonzero(anc != root)[0]
        if len(active) == 0:
            return total
        a = anc[active]
        total[active] += total[a]
        anc[active] = anc[a]


def _jump_to(target: NDArray[np.int64]) -> NDArray[np.int64]:
    """Follow `target` (each node's next node; fixed points end a chain) to its end."""
    out = target.copy()
    while True:
        nxt = out[out]
        moved = np.nonzero(nxt != out)[0]
        if len(moved) == 0:
            return out
        out[moved] = nxt[moved]


def condense(hierarchy: NDArray[np.float64], min_cluster_size: int
             ) -> NDArray[np.void]:
    """The library's `condense_tree(hierarchy, min_cluster_size)`, row for row.

    `hierarchy` is a single-linkage tree in scipy's format (N-1 rows of left, right,
    distance, size; row i makes node N+i)."""
    n_merges = hierarchy.shape[0]
    n = n_merges + 1
    m = 2 * n - 1  # nodes: points 0..n-1, merges n..2n-2
    root = m - 1
    left = hierarchy[:, 0].astype(np.int64)
    right = hierarchy[:, 1].astype(np.int64)
    merge = np.arange(n, m, dtype=np.int64)
    parent = np.empty(m, dtype=np.int64)
    parent[left], parent[right], parent[root] = merge, merge, root
    is_right = np.zeros(m, dtype=bool)
    is_right[right] = True
    size = np.ones(m, dtype=np.int64)
    size[n:] = hierarchy[:, 3].astype(np.int64)
    with np.errstate(divide="ignore"):
        lam = 1.0 / hierarchy[:, 2]  # per merge; 1/0 is inf, as in the library
    # Breadth-first order = (depth, left-first preorder index), both path sums, packed in
    # one int64: depth in the high bits, preorder (< m) in the low ones.
    bits = int(m).bit_length()
    step = np.ones(m, dtype=np.int64)
    step[right] += 2 * size[left] - 1  # a right child comes after its sibling's subtree
    step += np.int64(1) << bits
    step[root] = 0
    bfs = _jump_sum(parent, step, root)
    big = size >= min_cluster_size
    big[root] = True  # the library always processes the root
    split = np.zeros(m, dtype=bool)
    split[n:] = big[left] & big[right]
    # Cluster heads: the root and both children of a split; a big node belongs to the
    # cluster of its nearest head (itself included).
    is_head = split[parent]
    is_head[root] = True
    head = _jump_to(np.where(is_head, np.arange(m), parent))
    heads = np.nonzero(is_head)[0]
    cid = np.full(m, -1, dtype=np.int64)
    cid[heads[np.argsort(bfs[heads], kind="stable")]] = np.arange(n, n + len(heads))
    # Small nodes under a big parent fall out of that parent's cluster, all their points at
    # the parent's lambda: each point's topmost small ancestor (itself included).
    top = _jump_to(np.where(big[parent], np.arange(m), parent))
    pts = np.arange(n, dtype=np.int64)
    drop = top[pts]
    at = parent[drop]
    # Rows: two per split (left, right), one per point; in the library's order: by its
    # breadth-first walk of the merges, a split's left child first, fallen points by their
    # side and then breadth-first within it.
    sp = np.nonzero(split)[0]
    sp_rows = np.repeat(sp, 2)
    kids = np.empty(2 * len(sp), dtype=np.int64)
    kids[0::2], kids[1::2] = left[sp - n], right[sp - n]
    rows_at = np.concatenate([sp_rows, at])
    rows_child = np.concatenate([kids, pts])
    rows_side = np.concatenate([np.tile(np.array([0, 1], dtype=np.int8), len(sp)),
                                is_right[drop].astype(np.int8)])
    rows_key = np.concatenate([np.zeros(len(kids), dtype=np.int64), bfs[pts]])
    order = np.lexsort((rows_key, rows_side, bfs[rows_at]))
    rows_at, rows_child = rows_at[order], rows_child[order]
    out = np.empty(len(order), dtype=CONDENSED_DTYPE)
    out["parent"] = cid[head[rows_at]]
    is_cluster_row = rows_child >= n
    out["child"] = np.where(is_cluster_row, cid[np.where(is_cluster_row, rows_child, root)],
                            rows_child)
    out["lambda_val"] = lam[rows_at - n]
    out["child_size"] = size[rows_child]
    return out


def stability(tree: NDArray[np.void]) -> NDArray[np.float64]:
    """The library's `compute_stability`, as an array indexed by cluster id - smallest id."""
    parent = tree["parent"].astype(np.int64)
    child = tree["child"].astype(np.int64)
    lam = tree["lambda_val"]
    first = int(parent.min())
    k = int(parent.max()) - first + 1
    birth = np.zeros(k)
    clusters = child >= first
    birth[child[clusters] - first] = lam[clusters]
    birth[0] = 0.0
    with np.errstate(invalid="ignore"):
        w = (lam - birth[parent - first]) * tree["child_size"]
    return np.bincount(parent - first, weights=w, minlength=k)


def _eom_select(stab: NDArray[np.float64], left: NDArray[np.int64], right: NDArray[np.int64],
                up: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Excess of mass over clusters 0..k-1 (0 the root, children after parents): as the
    library's get_clusters, with its float32 sum of the children's stabilities."""
    k = len(stab)
    value = stab.tolist()
    lft, rgt = left.tolist(), right.tolist()
    chose = [False] * k
    f32 = array("f", [0.0])
    for c in range(k - 1, 0, -1):
        a = lft[c]
        if a < 0:
            sub = 0.0
        else:
            f32[0] = value[a]
            f32[0] = f32[0] + value[rgt[c]]
            sub = f32[0]
        if sub > value[c]:
            value[c] = sub
        else:
            chose[c] = True
    # Selected: chose itself and no strict ancestor did (a chosen ancestor drops its whole
    # subtree). `near`: the nearest chosen ancestor-or-self, else the root (never chosen).
    chosen = np.asarray(chose, dtype=bool)
    ids = np.arange(k)
    near = _jump_to(np.where(chosen | (ids == 0), ids, up))
    return chosen & ~chosen[near[up]]


def select_eom(tree: NDArray[np.void]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The library's `get_clusters(tree, stability, 'eom', False, False, 0.0)`: labels
    and probabilities (its third output, per-cluster stability scores, is not used here)."""
    parent = tree["parent"].astype(np.int64)
    child = tree["child"].astype(np.int64)
    lam = tree["lambda_val"]
    first = int(parent.min())
    n = first  # the points are 0..n-1, the root cluster is n
    k = int(max(parent.max(), child.max(initial=first)) - first + 1)
    crow = np.nonzero(child >= first)[0]  # cluster rows: a split's left child, then its right
    up = np.zeros(k, dtype=np.int64)
    up[child[crow] - first] = parent[crow] - first
    left = np.full(k, -1, dtype=np.int64)
    right = np.full(k, -1, dtype=np.int64)
    left[parent[crow[0::2]] - first] = child[crow[0::2]] - first
    right[parent[crow[1::2]] - first] = child[crow[1::2]] - first
    stab = np.zeros(k)
    s = stability(tree)
    stab[: len(s)] = s
    selected = _eom_select(stab, left, right, up)
    # Each cluster's nearest selected ancestor (itself included), -1 if none.
    ids = np.arange(k)
    anc = _jump_to(np.where(selected | (ids == 0), ids, up))
    label_of = np.full(k, -1, dtype=np.int64)
    label_of[selected] = np.arange(int(selected.sum()))
    prow = np.nonzero(child < first)[0]
    points = child[prow]
    labels = np.full(n, -1, dtype=np.int64)
    labels[points] = label_of[anc[parent[prow] - first]]
    # Probability: the point's lambda against the most persistent point of its cluster.
    death = np.zeros(k)
    np.maximum.at(death, parent - first, lam)
    probs = np.zeros(n)
    inside = labels[points] >= 0
    pl = lam[prow][inside]
    top = death[anc[parent[prow][inside] - first]]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where((top == 0.0) | ~np.isfinite(pl), 1.0, np.minimum(pl, top) / top)
    probs[points[inside]] = p
    return labels, probs
