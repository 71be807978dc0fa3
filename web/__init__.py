"""faceidx's local web app: FastAPI, Jinja2 templates and htmx over the `indexer` use cases."""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See web.app.create_app (imported here lazily: FastAPI loads only when serving)."""
    from .app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
