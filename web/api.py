"""The JSON API: each route parses its request, calls one use case in `indexer`, and answers.

Actions take a JSON body or a form (the pages post forms through htmx). Answered to htmx, an
action also says which page to show next (HX-Redirect) or to reload (HX-Refresh).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from indexer import browse, service
from indexer.errors import BadInput
from indexer.reading import Source

from .app import WebContext
from .views import face_json, person_json

router = APIRouter()

CROP_CACHE = "private, max-age=31536000, immutable"
"""A crop URL carries its key (?v=), so a given URL always means the same picture."""


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- reads
@router.get("/api/people")
def api_people(request: Request, limit: int = 100) -> Any:
    """Exactly what `faceidx people --json [--limit N]` prints (the same default; 0: all)."""
    if limit < 0:
        raise BadInput(f"limit {limit} is negative (0 lists every person)")
    ctx = _ctx(request)
    with ctx.reader() as rd:
        return ctx.read(("api_people", limit), lambda: service.people(rd, limit or None))


@router.get("/api/people/{cluster_id}")
def api_person(request: Request, cluster_id: int) -> Any:
    with _ctx(request).reader() as rd:
        return person_json(browse.person_page(rd, cluster_id, 0, 1).person)


@router.get("/api/people/{cluster_id}/faces")
def api_person_faces(request: Request, cluster_id: int, offset: int = 0,
                     limit: int = 100) -> Any:
    ctx = _ctx(request)
    with ctx.reader() as rd:
        page = ctx.read(("person", cluster_id, offset, limit),
                        lambda: browse.person_page(rd, cluster_id, offset, limit))
    return {**person_json(page.person), "offset": offset, "limit": limit,
            "faces": [face_json(f) for f in page.faces]}


@router.get("/api/status")
def api_status(request: Request, failures: bool = False) -> Any:
    """What `faceidx status --json` (with `failures=true`: `--failures --json`) prints."""
    with _ctx(request).reader() as rd:
        return service.status(rd, with_failures=failures)


@router.get("/api/history")
def api_history(request: Request, limit: int = 50) -> Any:
    if not 1 <= limit <= 1000:
        raise BadInput(f"limit {limit} is outside 1..1000")
    with _ctx(request).reader() as rd:
        return [asdict(c) for c in browse.recent_changes(rd, limit)]


@router.get("/api/merge-preview")
def api_merge_preview(request: Request, into: int, other: int) -> Any:
    from indexer import corrections

    with _ctx(request).reader() as rd:  # read only: the POST to /api/merge writes
        return asdict(corrections.merge_preview(rd, into, other))


@router.get("/faces/{face_id}.jpg")
def face_crop(request: Request, face_id: int, v: str | None = None) -> Any:
    """A face's crop; immutable when asked by its current key, else revalidated each time."""
    ctx = _ctx(request)
    if v is not None and v.isalnum():  # a crop made for this face, photo and box: no lookup
        cached = ctx.crops.cached(face_id, v)
        if cached is not None:
            return FileResponse(cached, media_type="image/jpeg",
                                headers={"Cache-Control": CROP_CACHE, "ETag": f'"{v}"'})
    path = ctx.read(("crop", face_id), lambda: ctx.crops.path_for(face_id))
    if not path.exists():  # pruned meanwhile
        path = ctx.crops.path_for(face_id)
    key = path.stem.split("-", 1)[1]
    cache = CROP_CACHE if v == key else "private, no-cache"
    return FileResponse(path, media_type="image/jpeg",
                        headers={"Cache-Control": cache, "ETag": f'"{key}"'})


@router.get("/photos/{image_id}/image.jpg")
def photo_image(request: Request, image_id: int, size: int = 1600) -> Any:
    """A catalog photo, downscaled (only photos the catalog holds, with the indexed bytes)."""
    from fastapi.responses import Response

    from indexer.crops import downscaled_photo

    if not 64 <= size <= 4096:
        raise BadInput(f"size {size} is outside 64..4096")
    ctx = _ctx(request)
    with ctx.reader() as rd:
        page = browse.photo_page(rd, image_id)
    data = downscaled_photo(ctx.settings, page.photo, size)
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=300"})


# ---------------------------------------------------------------------- actions
async def _body(request: Request) -> dict[str, Any]:
    """A JSON object or a form; repeated form fields (face_ids) become lists."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/json"):
        try:
            data = await request.json()
        except ValueError as exc:
            raise BadInput(f"request body is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise BadInput("request body must be a JSON object")
        return data
    if not kind:
        return {}
    form = await request.form()
    out: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        out[key] = values if key == "face_ids" else values[-1]
    return out


def _int(data: dict[str, Any], key: str, *, required: bool = True) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise BadInput(f"{key} is missing")
        return None
    if isinstance(value, bool):
        raise BadInput(f"{key} must be a whole number, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{key} must be a whole number, not {value!r}") from None


def _face_ids(data: dict[str, Any]) -> list[int]:
    raw = data.get("face_ids")
    if raw is None or raw == "" or raw == []:
        raise BadInput("no faces selected (face_ids is empty)")
    if not isinstance(raw, list):
        raw = [raw]
    try:
        return [int(v) for v in raw if not isinstance(v, bool)]
    except (TypeError, ValueError):
        raise BadInput(f"face_ids must be whole numbers, not {raw!r}") from None


def _person_ref(source: Source, data: dict[str, Any], key: str) -> int | None:
    """A person given by id (JSON int) or by name or id (form text); None when absent."""
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise BadInput(f"{key} must be a person's id or name, not {value!r}")
    if isinstance(value, int):
        return value
    return browse.resolve_person(source, str(value))


def _person_refs(ctx: WebContext, data: dict[str, Any], *keys: str) -> list[int | None]:
    """_person_ref of each key, read in one read of the catalog (closed before any write)."""
    with ctx.reader() as rd:
        return [_person_ref(rd, data, key) for key in keys]


def _done(request: Request, change: Any, goto: str | None = None) -> JSONResponse:
    headers = {}
    if "hx-request" in request.headers:
        headers = {"HX-Redirect": goto} if goto else {"HX-Refresh": "true"}
    return JSONResponse({"change": asdict(change)}, headers=headers)


@router.post("/api/people/{cluster_id}/name")
async def api_rename(request: Request, cluster_id: int) -> Any:
    from indexer import corrections

    ctx = _ctx(request)
    data = await _body(request)
    name = data.get("name")
    if not isinstance(name, str):
        raise BadInput("name is missing (give the person's name)")
    change = await run_in_threadpool(corrections.rename, ctx.settings, cluster_id, name)
    return _done(request, change)


@router.post("/api/merge")
async def api_merge(request: Request) -> Any:
    from indexer import corrections

    ctx = _ctx(request)
    data = await _body(request)
    into, other = await run_in_threadpool(_person_refs, ctx, data, "into", "other")
    if into is None or other is None:
        raise BadInput("merge needs both `into` and `other` (people's ids or names)")
    force = str(data.get("force", "")).lower() in ("1", "true", "on", "yes")
    change = await run_in_threadpool(lambda: corrections.merge(ctx.settings, into, other,
                                                               force=force))
    return _done(request, change, f"/people/{into}")


async def _reject(request: Request, face_ids: list[int], data: dict[str, Any]) -> Any:
    from indexer import corrections

    ctx = _ctx(request)
    cluster_id = _int(data, "cluster_id", required=False)
    if cluster_id is None:
        faces = await run_in_threadpool(browse.faces, ctx.settings, face_ids)
        clusters = {f.cluster_id for f in faces}
        if len(clusters) != 1 or None in clusters:
            raise BadInput("give cluster_id: the faces are not all in one person")
        cluster_id = clusters.pop()
    change = await run_in_threadpool(corrections.reject, ctx.settings, face_ids, cluster_id)
    return _done(request, change)


async def _move(request: Request, face_ids: list[int], data: dict[str, Any]) -> Any:
    from indexer import corrections

    ctx = _ctx(request)
    if ("target" in data and data["target"] is None) or data.get("new_person"):
        target = None  # a new person: a split
    else:
        target = await run_in_threadpool(_person_ref, ctx.settings, data, "target")
        if target is None:
            raise BadInput("give `target` (a person's id or name), or null for a new person")
    change = await run_in_threadpool(corrections.move, ctx.settings, face_ids, target)
    goto = None if change.cluster_id is None else f"/people/{change.cluster_id}"
    return _done(request, change, goto if target is None else None)


@router.post("/api/faces/{face_id}/reject")
async def api_reject_face(request: Request, face_id: int) -> Any:
    return await _reject(request, [face_id], await _body(request))


@router.post("/api/faces/{face_id}/move")
async def api_move_face(request: Request, face_id: int) -> Any:
    return await _move(request, [face_id], await _body(request))


@router.post("/api/faces/reject")
async def api_reject_faces(request: Request) -> Any:
    data = await _body(request)
    return await _reject(request, _face_ids(data), data)


@router.post("/api/faces/move")
async def api_move_faces(request: Request) -> Any:
    data = await _body(request)
    return await _move(request, _face_ids(data), data)


@router.post("/api/faces/accept")
async def api_accept_faces(request: Request) -> Any:
    from indexer import corrections

    ctx = _ctx(request)
    data = await _body(request)
    face_ids = _face_ids(data)
    cluster_id = _int(data, "cluster_id")
    assert cluster_id is not None
    change = await run_in_threadpool(corrections.accept, ctx.settings, face_ids, cluster_id)
    return _done(request, change)


@router.post("/api/undo")
async def api_undo(request: Request) -> Any:
    from indexer import corrections

    change = await run_in_threadpool(corrections.undo, _ctx(request).settings)
    return _done(request, change)


@router.post("/api/search")
async def api_search(request: Request) -> Any:
    """What `faceidx query --json` answers, for an uploaded photo (multipart field `photo`)."""
    from .search import run_search

    _, results = await run_search(request, _ctx(request))
    return [r.to_json() for r in results]
