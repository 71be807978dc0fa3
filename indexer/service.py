"""Use cases the CLI calls: open an index for a model, index folders, query a photo, status."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .errors import ModelMismatch
from .query import (  # noqa: F401  (the query use case, where callers found it before)
    QueryFace,
    Verdict,
    match_in,
    match_vectors,
    query_bytes,
    query_image,
    query_model,
    query_rgb,
)
from .reading import Source, reading, settings_of
from .settings import Settings
from .store import Store
from .types import ModelInfo

if TYPE_CHECKING:  # light commands (status, people) never import models or image decoding
    from .models import FaceModel

log = logging.getLogger(__name__)


def stored_model(settings: Settings) -> ModelInfo | None:
    """The model recorded in the index at settings.home, or None when there is no index."""
    if not settings.catalog_path.exists():
        return None
    store = Store.open(settings, read_only=True)
    try:
        return store.recorded_model
    finally:
        store.close(save=False)


def model_for_index(settings: Settings, requested: str | None) -> FaceModel:
    """The model to use on this home, loaded (weights checked) before the index is touched."""
    from .models import AUTO, create_model

    existing = stored_model(settings)
    if existing is not None:
        if requested is not None and requested not in (existing.name, AUTO):
            raise ModelMismatch(
                f"the index at {settings.home} was made by model {existing.name}, not "
                f"{requested}; use --model {existing.name}, or another --home for a new index")
        name = existing.name
    else:
        name = requested or settings.default_model
        if name == AUTO:
            from .models.auto import choose_model

            name, why = choose_model(settings)
            log.warning("new index at %s: model %s (auto: %s; --model forces one)",
                        settings.home, name, why)
    model = create_model(name, settings, parallel=True)
    model.load()
    return model


def open_for_writing(settings: Settings, model: FaceModel) -> Store:
    return Store.open(settings, model.info)


def open_for_reading(settings: Settings) -> Store:
    return Store.open(settings, read_only=True)


def status(source: Source, *, with_failures: bool = False) -> dict[str, Any]:
    from .summary import status_fields

    with reading(source) as store:
        counts = store.counts()
        model = store.recorded_model
        schema_version = store.schema_version()
        failures = store.failures() if with_failures else None
    return status_fields(settings_of(source), asdict(counts),
                         None if model is None else asdict(model), schema_version, failures)


def open_for_corrections(settings: Settings) -> Store:
    """A writer that holds the catalog only while it writes (a daemon may be running)."""
    return Store.open(settings, keep_open=False)


def people(source: Source, limit: int | None = None) -> list[dict[str, Any]]:
    return people_top(source, limit)[0]


def people_top(source: Source, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The first `limit` people (named first, then the largest clusters) and how many exist."""
    with reading(source) as store:
        rows, total = store.people_top(limit)
    return [asdict(p) for p in rows], total
