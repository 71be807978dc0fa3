"""What identifies the model that made an index's embeddings (the store reads it at every
open; in its own module so that a light command does not build indexer.types' other
classes: a frozen dataclass costs a millisecond or two to create)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the model that made an index's embeddings."""

    name: str
    dim: int
    weights: str
