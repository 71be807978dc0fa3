"""The `serve` command: the local web app over an index (web/), with uvicorn.

It binds to 127.0.0.1 unless told otherwise, prints its URL, and only reads the catalog between
the watch daemon's batches, so it runs beside `faceidx watch` on the same home."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import HomeOption, handle_errors, load_settings

HostOption = Annotated[str, typer.Option("--host", help="Address to bind (default: this "
                                         "machine only).")]
PortOption = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind "
                                         "(0: any free port).")]


def register(app: typer.Typer) -> None:
    """Add the `serve` command to `app`."""

    @app.command()
    @handle_errors
    def serve(
        home: HomeOption = None,
        host: HostOption = "127.0.0.1",
        port: PortOption = 8765,
        open_browser: Annotated[bool, typer.Option("--open", help="Open the app in the "
                                                   "default browser.")] = False,
        read_only: Annotated[bool, typer.Option("--read-only", help="Serve the pages with "
                                                "every action disabled.")] = False,
    ) -> None:
        """Browse, name and correct the people in the index in a local web app."""
        from indexer.errors import IndexNotFound

        settings = load_settings(home)
        if not settings.catalog_path.exists():
            raise IndexNotFound(f"no index at {settings.home}; run `faceidx index PATH` first "
                                "(or point --home / FACEIDX_HOME at an existing index)")
        server = WebServer(settings, host=host, port=port, read_only=read_only)
        server.run(open_browser=open_browser)


class WebServer:
    """uvicorn running the app; `start()` in a thread (watch --serve), `run()` in the
    foreground. The URL is printed on stderr once the socket is bound."""

    def __init__(self, settings, *, host: str, port: int, read_only: bool,  # type: ignore[no-untyped-def]
                 token: str | None = None, query_model=None,
                 beside_writer: bool = False) -> None:
        import socket

        import uvicorn

        from web import create_app

        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without, a kept-alive connection waits ~40 ms per
        # response (Nagle against the browser's delayed ACK on uvicorn's separate writes).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            from indexer.errors import FaceidxError

            raise FaceidxError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                               "try another --port") from exc
        self.port = int(self.sock.getsockname()[1])
        # beside_writer: this process also writes the catalog (watch --serve), so reads open
        # it as its writer does rather than attaching it to a second DuckDB instance
        app = create_app(settings, read_only=read_only, host=host, port=self.port, token=token,
                         query_model=query_model, attach_reads=not beside_writer)
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"faceidx: warning: listening on {host}: anyone who can reach this "
                       "address can see your photos", err=True)

    def announce(self, open_browser: bool) -> None:
        typer.echo(f"faceidx: serving {self.url} (Ctrl-C to stop)", err=True)
        typer.echo(self.url)
        if open_browser:
            import webbrowser

            webbrowser.open(self.url)

    def run(self, *, open_browser: bool = False) -> None:
        self.announce(open_browser)
        import contextlib

        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
            self.server.run(sockets=[self.sock])
        typer.echo("faceidx: web app stopped", err=True)

    def start(self, *, open_browser: bool = False) -> None:
        """Serve from a daemon thread (the caller's main thread keeps its signal handlers)."""
        import threading

        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="faceidx-web", daemon=True)
        self._thread.start()
        self.announce(open_browser)

    def stop(self) -> None:
        self.server.should_exit = True
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=5)

