"""The progress seam export reports through (the same protocol the indexing pipeline uses)."""

from __future__ import annotations

from ..pipeline import Progress


class NoProgress:
    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


__all__ = ["NoProgress", "Progress"]
