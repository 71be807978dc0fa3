"""Synthetic face-embedding-like data with identity structure, for tests and benchmarks.

Real face embeddings are unit vectors in which photos of one person sit in a tight cap and
different people are far closer than the sqrt(2) of random unit vectors (L2-normalised dlib
on LFW: same person median 0.32, 5-95% 0.25-0.39; different people median 0.57). The defaults
of `make_identities` reproduce that geometry:
identity centres share a common direction, members are centre plus isotropic noise, and every
vector is L2-normalised. Identity sizes follow a heavy-tailed law with many singletons, like a
photo library.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Embeddings = NDArray[np.float32]
Labels = NDArray[np.int64]

_CENTRE_BLOCK = 4096  # identity centres made at once


@dataclass(frozen=True)
class SyntheticFaces:
    """Embeddings and their true identity labels (every identity has its own label)."""

    embeddings: Embeddings
    identities: Labels


def identity_sizes(
    n_faces: int, rng: np.random.Generator, *, max_size: int = 50, singleton_share: float = 0.3
) -> NDArray[np.int64]:
    """Identity sizes summing to `n_faces`: some singletons, the rest Zipf-like in [2, max]."""
    n_single = int(round(n_faces * singleton_share))
    sizes: list[int] = [1] * n_single
    remaining = n_faces - n_single
    while remaining > 0:
        size = int(min(max_size, 1 + rng.zipf(1.7)))
        size = min(size, remaining)
        sizes.append(size)
        remaining -= size
    out = np.asarray(sizes, dtype=np.int64)
    rng.shuffle(out)
    return out


def make_identities(
    n_faces: int,
    dim: int = 128,
    *,
    seed: int = 0,
    max_size: int = 50,
    singleton_share: float = 0.3,
    between_distance: float = 0.57,
    within_distance: float = 0.31,
) -> SyntheticFaces:
    """Generate `n_faces` unit vectors in `dim` dimensions grouped into identities.

    `between_distance` is the typical distance between two identity centres and
    `within_distance` the typical distance between two photos of one person (each identity
    gets its own spread, from 0.85x to 1.15x of it, so densities vary as in real libraries).
    """
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n_faces, rng, max_size=max_size, singleton_share=singleton_share)
    n_ids = len(sizes)
    # Centres: a common direction plus a random part, so that centres are `between_distance`
    # apart on average instead of sqrt(2).
    common = rng.standard_normal(dim)
    common /= np.linalg.norm(common)
    cos_between = 1.0 - between_distance**2 / 2.0
    spread = np.sqrt(max(1e-6, (1.0 - cos_between) / max(cos_between, 1e-6)))
    # The centres are drawn here (the random stream is that of one draw of (identities x dim))
    # but made when the faces of their identities are, a block at a time, by a second
    # generator started where this one drew them: all of them at once in float64, with
    # temporaries, were 4.3 GB at 1M x 512 (318k identities), more than the clustering of the
    # vectors needs; kept in float32 they were still 650 MB beside the vectors.
    centre_rng = np.random.default_rng()
    centre_rng.bit_generator.state = rng.bit_generator.state
    for start in range(0, n_ids, _CENTRE_BLOCK):
        rng.standard_normal((min(_CENTRE_BLOCK, n_ids - start), dim))
    identities = np.repeat(np.arange(n_ids, dtype=np.int64), sizes)
    # Member = centre + noise of norm sigma; two members are about sqrt(2)*sigma/sqrt(1+sigma^2)
    # apart, so sigma follows from the wanted within-identity distance.
    per_id = within_distance * rng.uniform(0.85, 1.15, n_ids)
    sigma = per_id / np.sqrt(np.maximum(2.0 - per_id**2, 1e-6))
    # Built in chunks, in float32, so that making 1M x 512 vectors costs little beyond them.
    x = np.empty((n_faces, dim), dtype=np.float32)
    centres = np.empty((0, dim), dtype=np.float32)  # centres of identities first.. onwards
    first = 0
    step = 16384  # faces at once: a few (step x dim) temporaries, 32 MB each at 512-d
    for start in range(0, n_faces, step):
        ids = identities[start : start + step]
        lo, hi = int(ids[0]), int(ids[-1]) + 1
        made = [centres[lo - first :]]
        for block in range(first + len(centres), hi, _CENTRE_BLOCK):
            rows = min(_CENTRE_BLOCK, hi - block)
            c = common[None, :] + spread * centre_rng.standard_normal((rows, dim)) / np.sqrt(dim)
            c /= np.linalg.norm(c, axis=1, keepdims=True)
            made.append(c.astype(np.float32))
        centres, first = np.concatenate(made), lo
        noise = rng.standard_normal((len(ids), dim), dtype=np.float32)
        noise *= (sigma[ids] / np.sqrt(dim)).astype(np.float32)[:, None]
        chunk = centres[ids - first] + noise
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        x[start : start + step] = chunk
    order = rng.permutation(n_faces)
    # Shuffled in place, a band of columns at a time: x[order] would hold a second full copy
    # (2 GB at 1M x 512) at the peak.
    band = max(1, (1 << 26) // max(1, 4 * n_faces))
    for col in range(0, dim, band):
        x[:, col : col + band] = x[order, col : col + band]
    return SyntheticFaces(embeddings=x, identities=identities[order])
