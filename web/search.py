"""Search by photo: an upload (bounded in size) answered as `faceidx query` answers a file."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from indexer import service
from indexer.errors import BadInput
from indexer.reading import Reader

from .app import WebContext

MATCHES = 10
"""Matches per face, as `faceidx query` gives by default."""


class TooLarge(BadInput):
    """An upload over settings.upload_max_bytes."""

    http_status = 413


async def run_search(request: Request, ctx: WebContext,
                     reader: Reader | None = None) -> tuple[bytes, list[service.QueryFace]]:
    """The uploaded bytes and, for each face found in them, its closest indexed faces (read
    through the request's `reader` when given)."""
    limit = ctx.settings.upload_max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 65536:
        raise TooLarge(f"upload of {int(declared)} bytes is over the {limit} byte limit")
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise BadInput("upload a photo as multipart/form-data in the field `photo`")
    form = await request.form()
    upload: Any = form.get("photo")
    if upload is None or isinstance(upload, str):
        raise BadInput("no photo uploaded (field `photo` is missing)")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{upload.filename}: upload is over the {limit} byte limit")
    name = upload.filename or "upload"

    def work() -> list[service.QueryFace]:
        return service.query_bytes(reader or ctx.settings, data, MATCHES, name=name,
                                   model=ctx.query_model())

    return data, await run_in_threadpool(work)
