"""Synthetic faces that follow statistics measured on real embeddings (a PLDA-style model).

`clustering.synthetic.make_identities` draws identity centres and each face's noise
isotropically in every dimension. Real embeddings are not like that: most of their variance
lies in a few directions (dlib on LFW: about half in the top 10 principal components), so a
face's nearest neighbours stand out from the crowd, where in isotropic data a query's 10th
neighbour is one of thousands at nearly the same distance. An approximate index then looks
far worse on synthetic faces than on real ones.

This module measures, on real faces with known identities, the mean, the covariance of the
identity centres (between) and of each face around its identity's centre (within), and draws

    centre = mean + B z,    face = centre + W e,    then L2-normalised,

with B B^T and W W^T the measured covariances and z, e standard normal: the generative model of
PLDA (Ioffe 2006; Prince and Elder 2007), with every parameter measured. Identity sizes follow
`make_identities` (singletons plus a Zipf-like tail).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clustering.synthetic import SyntheticFaces, identity_sizes


@dataclass(frozen=True)
class EmbeddingStats:
    """Mean, between- and within-identity covariances of real embeddings."""

    mean: np.ndarray  # (d,)
    between: np.ndarray  # (d, d): covariance of identity centres
    within: np.ndarray  # (d, d): covariance of a face around its identity's centre
    faces: int
    identities: int

    @property
    def dim(self) -> int:
        return len(self.mean)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, between=self.between, within=self.within,
                 counts=np.asarray([self.faces, self.identities]))

    @classmethod
    def load(cls, path: Path) -> EmbeddingStats:
        with np.load(path) as data:
            faces, identities = (int(v) for v in data["counts"])
            return cls(mean=data["mean"], between=data["between"], within=data["within"],
                       faces=faces, identities=identities)


def fit(vectors: np.ndarray, labels: np.ndarray) -> EmbeddingStats:
    """Measure the model's parameters on real faces; identities with one face inform the mean
    and the between covariance only."""
    x = np.asarray(vectors, dtype=np.float64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, inverse, x)
    centres = sums / counts[:, None]
    resid = x - centres[inverse]
    multi = counts[inverse] > 1
    dof = max(int(multi.sum()) - int((counts > 1).sum()), 1)
    within = resid[multi].T @ resid[multi] / dof
    # The spread of identity means holds the between covariance plus within / size.
    between = np.cov(centres.T, aweights=None) - within * float(np.mean(1.0 / counts))
    values, vecs = np.linalg.eigh(between)
    between = (vecs * np.clip(values, 0.0, None)) @ vecs.T
    return EmbeddingStats(mean=x.mean(axis=0), between=between, within=within,
                          faces=len(x), identities=len(counts))


def _root(cov: np.ndarray) -> np.ndarray:
    values, vecs = np.linalg.eigh(cov)
    return (vecs * np.sqrt(np.clip(values, 0.0, None))).astype(np.float32)


def make_like(stats: EmbeddingStats, n_faces: int, *, seed: int = 0, max_size: int = 50,
              singleton_share: float = 0.3) -> SyntheticFaces:
    """`n_faces` unit vectors drawn from the measured model, with their identity labels."""
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n_faces, rng, max_size=max_size, singleton_share=singleton_share)
    dim = stats.dim
    centres = (stats.mean.astype(np.float32)[None, :]
               + rng.standard_normal((len(sizes), dim), dtype=np.float32) @ _root(
                   stats.between).T)
    identities = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    within = _root(stats.within).T
    x = np.empty((n_faces, dim), dtype=np.float32)
    step = 65536
    for start in range(0, n_faces, step):
        ids = identities[start:start + step]
        chunk = centres[ids] + rng.standard_normal((len(ids), dim), dtype=np.float32) @ within
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        x[start:start + step] = chunk
    order = rng.permutation(n_faces)
    return SyntheticFaces(embeddings=x[order], identities=identities[order])
