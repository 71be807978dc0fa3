"""The HTML pages: each is a template plus one use-case call."""

from __future__ import annotations

import base64
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from indexer import browse, service
from indexer.reading import Reader

from .app import WebContext, page_context
from .views import label

router = APIRouter()

PEOPLE_PER_PAGE = 100
FACES_PER_PAGE = 120


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _render(request: Request, reader: Reader, template: str, **values: Any) -> HTMLResponse:
    return _ctx(request).templates.TemplateResponse(
        request, template, {**page_context(request, reader), **values})


@router.get("/", response_class=HTMLResponse)
def people(request: Request, q: str = "", offset: int = 0) -> Any:
    ctx = _ctx(request)
    with ctx.reader() as rd:
        page = ctx.read(("people", q, offset),
                        lambda: browse.people_page(rd, q, offset, PEOPLE_PER_PAGE))
        return _render(request, rd, "people.html", page=page, title="People")


@router.get("/people/{cluster_id}", response_class=HTMLResponse)
def person(request: Request, cluster_id: int, offset: int = 0) -> Any:
    ctx = _ctx(request)
    with ctx.reader() as rd:
        page = ctx.read(("person", cluster_id, offset),
                        lambda: browse.person_page(rd, cluster_id, offset, FACES_PER_PAGE))
        return _render(request, rd, "person.html", page=page, title=label(page.person),
                       named=_named(ctx, rd))


@router.get("/people/{cluster_id}/merge", response_class=HTMLResponse)
def merge_preview(request: Request, cluster_id: int, into: str = "") -> Any:
    """Both people side by side and what merging `cluster_id` into `into` will do (read
    only: the POST to /api/merge writes)."""
    from indexer import corrections

    ctx = _ctx(request)
    with ctx.reader() as rd:
        target = browse.resolve_person(rd, into)
        preview = corrections.merge_preview(rd, target, cluster_id)
        into_page = browse.person_page(rd, target, 0, 12)
        other_page = browse.person_page(rd, cluster_id, 0, 12)
        return _render(request, rd, "merge.html", preview=preview, into=into_page,
                       other=other_page, title="Merge")


def _named(ctx: WebContext, reader: Reader) -> Any:
    return ctx.read("named", lambda: browse.named_people(reader))


@router.get("/unassigned", response_class=HTMLResponse)
def unassigned(request: Request) -> Any:
    ctx = _ctx(request)
    with ctx.reader() as rd:
        page = ctx.read("unassigned", lambda: browse.unassigned(rd))
        return _render(request, rd, "unassigned.html", page=page, named=_named(ctx, rd),
                       title="Unassigned")


@router.get("/photos/{image_id}", response_class=HTMLResponse)
def photo(request: Request, image_id: int) -> Any:
    ctx = _ctx(request)
    with ctx.reader() as rd:
        page = ctx.read(("photo", image_id), lambda: browse.photo_page(rd, image_id))
        return _render(request, rd, "photo.html", page=page,
                       title=page.photo.path.rsplit("/", 1)[-1])


@router.get("/search", response_class=HTMLResponse)
def search_form(request: Request) -> Any:
    ctx = _ctx(request)
    with ctx.reader() as rd:
        return _render(request, rd, "search.html", title="Search by photo", results=None)


@router.post("/search", response_class=HTMLResponse)
async def search(request: Request) -> Any:
    """The results of a search by photo, as a fragment for htmx (or a whole page)."""
    from .search import run_search

    ctx = _ctx(request)
    rd = ctx.reader()
    try:
        data, results = await run_search(request, ctx, rd)
        faces = await run_in_threadpool(_search_faces, ctx, rd, data, results)
        template = "_search_results.html" if "hx-request" in request.headers else "search.html"
        return await run_in_threadpool(_render, request, rd, template, results=faces,
                                       title="Search by photo")
    finally:
        await run_in_threadpool(rd.close)


def _search_faces(ctx: WebContext, reader: Reader, data: bytes,
                  results: list[service.QueryFace]) -> list[dict[str, Any]]:
    crops = query_face_crops(data, [list(r.bbox) for r in results], ctx.settings.crop_size)
    found = {f.face_id: f for f in browse.faces_present(
        reader, sorted({m.face_id for r in results for m in r.matches}))}
    out = []
    for result, crop in zip(results, crops, strict=True):
        item = _search_face(ctx, result)
        item["crop"] = crop
        item["faces"] = [(m, found[m.face_id]) for m in result.matches if m.face_id in found]
        item["this_photo"] = sorted({found[m.face_id].image_id for m in result.matches
                                     if m.this_photo and m.face_id in found})
        out.append(item)
    return out


def _search_face(ctx: WebContext, face: service.QueryFace) -> dict[str, Any]:
    """One query face: the verdict `faceidx query` gives, and its closest people (best
    distance each) and faces."""
    people: dict[int, dict[str, Any]] = {}
    for m in face.matches:
        if m.cluster_id is None or m.cluster_id < 0 or m.this_photo:
            continue  # the uploaded photo's own faces, when it is indexed, say nothing
        best = people.get(m.cluster_id)
        if best is None or m.distance < best["distance"]:
            people[m.cluster_id] = {"cluster_id": m.cluster_id, "distance": m.distance,
                                    "name": m.person or f"Unnamed #{m.cluster_id}",
                                    "face_id": m.face_id}
    ranked = sorted(people.values(), key=lambda p: p["distance"])
    return {"bbox": [round(v) for v in face.bbox], "people": ranked[:5],
            "verdict": face.verdict}


def query_face_crops(data: bytes, boxes: list[list[float]], size: int) -> list[str]:
    """Data URIs of the query faces (the upload is not stored, so crops are inline)."""
    from PIL import Image, ImageOps

    from indexer.crops import face_crop

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    out = []
    for box in boxes:
        buf = io.BytesIO()
        face_crop(img, tuple(float(v) for v in box), size).save(buf, "JPEG", quality=80)
        out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


@router.get("/status", response_class=HTMLResponse)
def status(request: Request) -> Any:
    ctx = _ctx(request)
    with ctx.reader() as rd:
        info = service.status(rd, with_failures=True)
        return _render(request, rd, "status.html", info=info, title="Status",
                       history=ctx.read("history", lambda: browse.recent_changes(rd, 20)))
