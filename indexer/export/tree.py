"""Making HDBSCAN's condensed tree drawable: a coarser view of a tree with many clusters."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def cluster_nodes(tree: np.ndarray) -> int:
    """How many clusters (root included) the tree has."""
    return int((tree["child_size"] > 1).sum()) + 1


def recondense(tree: np.ndarray, min_size: int) -> np.ndarray:
    """The tree HDBSCAN would condense with min_cluster_size = `min_size` (>= the original).

    A split whose two branches both hold `min_size` faces stays a split; a smaller branch
    becomes faces falling out of its parent at the split's lambda, and a single large branch
    carries on as its parent. Same structured dtype as the input.
    """
    root = int(tree["parent"].min())
    kids: dict[int, list[int]] = defaultdict(list)
    for i, parent in enumerate(tree["parent"].tolist()):
        kids[parent].append(i)

    def points_under(node: int) -> list[int]:
        out, stack = [], [node]
        while stack:
            for i in kids[stack.pop()]:
                child = int(tree["child"][i])
                if child < root:
                    out.append(child)
                else:
                    stack.append(child)
        return out

    rows: list[tuple[int, int, float, int]] = []
    next_id = root + 1
    stack = [(root, root)]  # (node in the old tree, node in the new tree it belongs to)
    while stack:
        node, new = stack.pop()
        clusters = []
        for i in kids[node]:
            child, lam, size = int(tree["child"][i]), float(tree["lambda_val"][i]), \
                int(tree["child_size"][i])
            if child < root:
                rows.append((new, child, lam, 1))
            else:
                clusters.append((child, lam, size))
        big = [c for c in clusters if c[2] >= min_size]
        for child, lam, size in clusters:
            if len(big) == 2 and size >= min_size:
                rows.append((new, next_id, lam, size))
                stack.append((child, next_id))
                next_id += 1
            elif size >= min_size:
                stack.append((child, new))  # the one large branch carries on as its parent
            else:
                rows.extend((new, p, lam, 1) for p in points_under(child))
    out = np.array(rows, dtype=tree.dtype)
    return out[np.lexsort((out["child"], out["parent"]))]


def split_sizes(tree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per parent with cluster children: the second and third largest child cluster's size
    (0 when it has fewer)."""
    root = int(tree["parent"].min())
    branch = tree[tree["child"] >= root]
    order = np.lexsort((-branch["child_size"].astype(np.int64), branch["parent"]))
    parents, sizes = branch["parent"][order], branch["child_size"][order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
    counts = np.diff(np.r_[starts, len(parents)])
    second = np.where(counts >= 2, sizes[np.minimum(starts + 1, len(sizes) - 1)], 0)
    third = np.where(counts >= 3, sizes[np.minimum(starts + 2, len(sizes) - 1)], 0)
    return second, third


def view_nodes(second: np.ndarray, third: np.ndarray, min_size: int) -> int:
    """cluster_nodes(recondense(tree, min_size)) from `split_sizes(tree)`, without building
    the view: a split stays when exactly two of its branches hold `min_size` faces (a branch
    that large has every ancestor as large, so it is reached), and each adds two clusters."""
    return 1 + 2 * int(((second >= min_size) & (third < min_size)).sum())


def coarsen(tree: np.ndarray, max_clusters: int) -> tuple[np.ndarray, int]:
    """The tree itself if it has at most `max_clusters` clusters, else the finest
    recondensed view that does; and the min_cluster_size of the view (0 when unchanged).
    The search counts each candidate view's clusters without building it (linear in the
    branches, not the faces); only the chosen view is built."""
    if cluster_nodes(tree) <= max_clusters:
        return tree, 0
    sizes = np.unique(tree["child_size"][tree["child_size"] > 1])
    second, third = split_sizes(tree)
    lo, hi = 0, len(sizes) - 1  # binary search the smallest size that is coarse enough
    best = int(sizes[-1]) + 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if view_nodes(second, third, int(sizes[mid])) <= max_clusters:
            best, hi = int(sizes[mid]), mid - 1
        else:
            lo = mid + 1
    return recondense(tree, best), best
