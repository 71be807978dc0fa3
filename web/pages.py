"""The HTML pages: each is a template plus one use-case call."""

from __future__ import annotations

import base64
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from indexer import browse, service

from .app import WebContext, page_context
from .views import label

router = APIRouter()

PEOPLE_PER_PAGE = 100
FACES_PER_PAGE = 120


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _render(request: Request, template: str, **values: Any) -> HTMLResponse:
    return _ctx(request).templates.TemplateResponse(request, template,
                                                    {**page_context(request), **values})


@router.get("/", response_class=HTMLResponse)
def people(request: Request, q: str = "", offset: int = 0) -> Any:
    ctx = _ctx(request)
    page = ctx.read(("people", q, offset),
                    lambda: browse.people_page(ctx.settings, q, offset, PEOPLE_PER_PAGE))
    return _render(request, "people.html", page=page, title="People")


@router.get("/people/{cluster_id}", response_class=HTMLResponse)
def person(request: Request, cluster_id: int, offset: int = 0) -> Any:
    ctx = _ctx(request)
    page = ctx.read(("person", cluster_id, offset),
                    lambda: browse.person_page(ctx.settings, cluster_id, offset, FACES_PER_PAGE))
    return _render(request, "person.html", page=page, title=label(page.person),
                   named=_named(ctx))


@router.get("/people/{cluster_id}/merge", response_class=HTMLResponse)
def merge_preview(request: Request, cluster_id: int, into: str = "") -> Any:
    """Both people side by side and what merging `cluster_id` into `into` will do."""
    from indexer import corrections

    ctx = _ctx(request)
    target = browse.resolve_person(ctx.settings, into)
    preview = corrections.merge_preview(ctx.settings, target, cluster_id)
    into_page = browse.person_page(ctx.settings, target, 0, 12)
    other_page = browse.person_page(ctx.settings, cluster_id, 0, 12)
    return _render(request, "merge.html", preview=preview, into=into_page, other=other_page,
                   title="Merge")


def _named(ctx: WebContext) -> Any:
    return ctx.read("named", lambda: browse.named_people(ctx.settings))


@router.get("/unassigned", response_class=HTMLResponse)
def unassigned(request: Request) -> Any:
    ctx = _ctx(request)
    page = ctx.read("unassigned", lambda: browse.unassigned(ctx.settings))
    return _render(request, "unassigned.html", page=page, named=_named(ctx), title="Unassigned")


@router.get("/photos/{image_id}", response_class=HTMLResponse)
def photo(request: Request, image_id: int) -> Any:
    ctx = _ctx(request)
    page = ctx.read(("photo", image_id), lambda: browse.photo_page(ctx.settings, image_id))
    return _render(request, "photo.html", page=page, title=page.photo.path.rsplit("/", 1)[-1])


@router.get("/search", response_class=HTMLResponse)
def search_form(request: Request) -> Any:
    return _render(request, "search.html", title="Search by photo", results=None)


@router.post("/search", response_class=HTMLResponse)
async def search(request: Request) -> Any:
    """The results of a search by photo, as a fragment for htmx (or a whole page)."""
    from .search import run_search

    ctx = _ctx(request)
    data, results = await run_search(request, ctx)
    faces = await run_in_threadpool(_search_faces, ctx, data, results)
    template = "_search_results.html" if "hx-request" in request.headers else "search.html"
    return _render(request, template, results=faces, title="Search by photo")


def _search_faces(ctx: WebContext, data: bytes,
                  results: list[service.QueryFace]) -> list[dict[str, Any]]:
    found = {f.face_id: f for f in browse.faces_present(
        ctx.settings, sorted({m.face_id for r in results for m in r.matches}))}
    crops = query_face_crops(data, [list(r.bbox) for r in results], ctx.settings.crop_size)
    out = []
    for result, crop in zip(results, crops, strict=True):
        item = _search_face(ctx, result)
        item["crop"] = crop
        item["faces"] = [(m, found[m.face_id]) for m in result.matches if m.face_id in found]
        out.append(item)
    return out


def _search_face(ctx: WebContext, face: service.QueryFace) -> dict[str, Any]:
    """One query face: the verdict `faceidx query` gives, and its closest people (best
    distance each) and faces."""
    people: dict[int, dict[str, Any]] = {}
    for m in face.matches:
        if m.cluster_id is None or m.cluster_id < 0:
            continue
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
    info = service.status(ctx.settings, with_failures=True)
    return _render(request, "status.html", info=info, title="Status",
                   history=ctx.read("history", lambda: browse.recent_changes(ctx.settings, 20)))
