"""The app factory: `create_app(settings, ...)` builds the ASGI app over one index home.

Nothing here holds state at module level: each app gets its settings, its per-start token and
its crop cache, so tests build one per test over a home under tmp_path.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from indexer.crops import CropCache
from indexer.errors import BadInput, Conflict, FaceidxError, IndexBusy, IndexNotFound, NotFound
from indexer.reading import Reader
from indexer.settings import Settings

from .guard import Guard

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MEMO_ENTRIES = 512
"""Reads kept while the catalog is unchanged (pages, lists of faces, crop lookups)."""
T = TypeVar("T")


@dataclass
class WebContext:
    """What every route needs, handed in by create_app."""

    settings: Settings
    read_only: bool
    token: str
    crops: CropCache
    templates: Jinja2Templates
    _model: Any = None
    _model_lock: threading.Lock = field(default_factory=threading.Lock)
    _memo: OrderedDict[Any, Any] = field(default_factory=OrderedDict)
    _memo_version: tuple[int, ...] | None = None
    _memo_lock: threading.Lock = field(default_factory=threading.Lock)
    _kept: dict[Any, tuple[Any, Any]] = field(default_factory=dict)

    def read(self, key: Any, read: Callable[[], T]) -> T:
        """`read()`, or what it gave last time if the catalog has not changed since: a page
        viewed again opens no connection (opening one costs more than the query)."""
        from indexer.browse import catalog_version

        version = catalog_version(self.settings)
        with self._memo_lock:
            if version != self._memo_version:
                self._memo.clear()
                self._memo_version = version
            elif key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]  # type: ignore[no-any-return]
        value = read()
        with self._memo_lock:
            if self._memo_version == version:
                self._memo[key] = value
                while len(self._memo) > MEMO_ENTRIES:
                    self._memo.popitem(last=False)
        return value

    def kept(self, key: Any, stamp: Any, read: Callable[[], T]) -> T:
        """`read()`, or what it gave last time under the same `stamp` (None: no stamp, read
        every time): for what changes with one part of the catalog only, kept across writes
        of the rest (the Undo bar's last change changes with the history alone)."""
        if stamp is None:
            return read()
        with self._memo_lock:
            hit = self._kept.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]  # type: ignore[no-any-return]
        value = read()
        with self._memo_lock:
            self._kept[key] = (stamp, value)
        return value

    def reader(self) -> Reader:
        """The request's read of the catalog (a `with` block): every use case a page calls
        reads through it, so the catalog is attached once per request at most (not at all
        when the page comes from memory)."""
        return Reader(self.settings)

    def query_model(self) -> Any:
        """The face model for search by photo, loaded once on first use."""
        from indexer import service

        with self._model_lock:
            if self._model is None:
                self._model = service.query_model(self.settings)
            return self._model


def status_for(exc: FaceidxError) -> int:
    if isinstance(getattr(exc, "http_status", None), int):
        return int(exc.http_status)  # type: ignore[attr-defined]
    if isinstance(exc, NotFound | IndexNotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, IndexBusy):
        return 503
    return 400  # BadInput, UnreadableImage and every other refusal


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/faces/")) or "hx-request" in request.headers


def create_app(settings: Settings, *, read_only: bool = False, token: str | None = None,
               host: str = "127.0.0.1", port: int | None = 8765,
               query_model: Any = None, attach_reads: bool = True) -> FastAPI:
    """The web app over the index at settings.home.

    Requests must carry Host `host:port` (or `localhost:port` for a loopback host); every
    request that is not GET/HEAD must carry `token` in X-Faceidx-Token (a fresh random one when
    not given); with read_only every action is refused and shown disabled. `query_model`, a
    loaded FaceModel of the index's model, embeds search uploads (else loaded on first search).
    With `attach_reads` (not in a process that also writes the catalog, as `watch --serve`)
    reads go through one kept DuckDB instance that attaches the catalog for each request.
    """
    token = token or secrets.token_urlsafe(24)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    from .views import face_url, label, person_crop_url, suggestion_marks

    templates.env.globals.update(face_url=face_url, label=label, person_crop_url=person_crop_url,
                                 suggestion_marks=suggestion_marks)
    ctx = WebContext(settings=settings, read_only=read_only, token=token,
                     crops=CropCache(settings), templates=templates, _model=query_model)
    app = FastAPI(title="faceidx", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx

    @app.exception_handler(FaceidxError)
    async def _faceidx_error(request: Request, exc: FaceidxError) -> Response:
        code = status_for(exc)
        if wants_json(request):
            return JSONResponse({"error": one_line(exc)}, status_code=code)
        title = "Not found" if code == 404 else "Cannot do that"
        return templates.TemplateResponse(request, "error.html",
                                          {**page_context(request), "message": one_line(exc),
                                           "code": code, "title": title}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("loc", ("",))[0] == "path" for e in errors):
            return await _faceidx_error(request, NotFound(f"no such page: {request.url.path}"))
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return await _faceidx_error(
            request, BadInput(f"{where}: {first.get('msg', 'invalid value')}"))

    from . import api, pages

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    catalog = None
    if attach_reads:
        from indexer.store.attach import AttachedCatalog

        catalog = AttachedCatalog(settings.catalog_path, settings.lock_timeout)
    app.state.catalog = catalog
    app.add_middleware(ReadsThrough, catalog=catalog)
    app.add_middleware(Guard, hosts=allowed_hosts(host, port), token=token, read_only=read_only)
    return app


class ReadsThrough:
    """Pure ASGI middleware: the request's reads go through the app's AttachedCatalog (when
    given), and the response says in a Server-Timing header how long the request waited for
    the catalog (`catalog`: the daemon writing its batch, mostly), the server's CPU time
    (`cpu`, of this process while it answered) and its wall time (`app`)."""

    def __init__(self, app: Any, *, catalog: Any) -> None:
        self.app = app
        self.catalog = catalog

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import time

        from indexer.store.attach import reads_through

        wall, cpu = time.perf_counter(), time.process_time()
        with reads_through(self.catalog) as waits:

            async def timed_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    timing = (f"catalog;dur={sum(waits) * 1000:.1f}, "
                              f"cpu;dur={(time.process_time() - cpu) * 1000:.1f}, "
                              f"app;dur={(time.perf_counter() - wall) * 1000:.1f}")
                    message["headers"] = [*message.get("headers", []),
                                          (b"server-timing", timing.encode())]
                await send(message)

            await self.app(scope, receive, timed_send)


def allowed_hosts(host: str, port: int | None) -> set[str]:
    """Host header values this server answers: the bound host:port (DNS-rebinding guard)."""
    names = {host}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= {"localhost", "127.0.0.1"}
    out = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        out.add(shown if port is None else f"{shown}:{port}")
    return out


def page_context(request: Request, reader: Reader | None = None) -> dict[str, Any]:
    """What the base template shows on every page: token, read-only, the last change (read
    through the request's `reader`, else on its own)."""
    ctx: WebContext = request.app.state.ctx
    return {"token": ctx.token, "read_only": ctx.read_only,
            "last_change": last_change(ctx, reader), "nav": request.url.path}


def last_change(ctx: WebContext, reader: Reader | None = None) -> Any:
    from indexer import browse

    source = reader or ctx.settings
    try:  # read again when the catalog changed, and then only if its history did
        return ctx.read("last_undoable", lambda: ctx.kept(
            "last_undoable", browse.history_stamp(source),
            lambda: browse.last_undoable(source)))
    except FaceidxError:
        return None
