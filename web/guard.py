"""The server's guard, in front of every route: the Host check (DNS rebinding), the per-start
token on every request that can change something, and --read-only."""

from __future__ import annotations

import json
import secrets
from typing import Any

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_POSTS = frozenset({"/search", "/api/search"})
"""POSTs that change nothing (a search by photo); allowed on a --read-only server."""
TOKEN_HEADER = b"x-faceidx-token"


class Guard:
    """Pure ASGI middleware: refuses a request before it reaches any route."""

    def __init__(self, app: Any, *, hosts: set[str], token: str, read_only: bool) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token.encode()
        self.read_only = read_only

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if host not in self.hosts:
            await _refuse(send, 403, f"Host {host!r} is not this server "
                          f"({', '.join(sorted(self.hosts))}); refused")
            return
        if scope["method"] not in SAFE_METHODS:
            if self.read_only and scope["path"] not in READ_ONLY_POSTS:
                await _refuse(send, 403, "this server runs with --read-only: nothing can be "
                              "changed here")
                return
            sent = headers.get(TOKEN_HEADER, b"")
            if not secrets.compare_digest(sent, self.token):
                what = "missing" if not sent else "wrong"
                await _refuse(send, 403, f"X-Faceidx-Token header {what}: state-changing "
                              "requests need the token this server's pages carry")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
