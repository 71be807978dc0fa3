"""The `watch` command: catch up on PATHS, then index new, moved and deleted photos as they come.

SIGINT and SIGTERM ask the daemon to finish the batch in hand, save, and exit 0. A second
daemon (or `index`) on the same home fails at once with a one-line error and exit code 2.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from cli.common import HomeOption, handle_errors, load_settings, setup_logging

log = logging.getLogger("indexer.watch")


def register(app: typer.Typer) -> None:
    """Add the `watch` command to `app`."""

    @app.command()
    @handle_errors
    def watch(
        paths: Annotated[list[Path], typer.Argument(help="Folders (or files) of photos to "
                                                    "follow.")],
        model: Annotated[str | None, typer.Option(
            "--model", help="auto, facenet, sface or dlib (a new index defaults to auto: "
            "facenet if its weights can be had, else sface; an existing index keeps its own).",
            show_default=False)] = None,
        home: HomeOption = None,
        recluster_every: Annotated[int | None, typer.Option(
            "--recluster-every", min=0, metavar="N",
            help="Recluster in the background after N new faces, or sooner when the index "
            "grew by recluster_growth (0: never; default 200).", show_default=False)] = None,
        recluster_interval: Annotated[float | None, typer.Option(
            "--recluster-interval", min=0, metavar="SECONDS",
            help="At least this long between two periodic reclusters (0: no minimum; the "
            "daemon then waits for its queue to drain; default 3600).",
            show_default=False)] = None,
        settle: Annotated[float | None, typer.Option(
            "--settle", min=0, metavar="SECONDS",
            help="How long a file's size and mtime must stay put before it is indexed "
            "(default 0.25).", show_default=False)] = None,
        poll: Annotated[bool, typer.Option(
            "--poll", help="Poll the folders instead of using inotify (network file "
            "systems).")] = False,
        verbose: Annotated[int, typer.Option(
            "--verbose", "-v", count=True, help="Log each batch (-vv: each event).")] = 0,
        serve: Annotated[bool, typer.Option(
            "--serve", help="Also run the web app (as `faceidx serve`) in this process.")]
        = False,
        port: Annotated[int, typer.Option(
            "--port", min=0, max=65535, help="Port of the web app with --serve (on "
            "127.0.0.1).")] = 8765,
    ) -> None:
        """Index PATHS, then keep following them: new photos become searchable on their own."""
        from indexer import service
        from indexer.pipeline import resolve_roots
        from indexer.watch import WatchDaemon

        if verbose:
            setup_logging(verbose)
        settings = load_settings(home, model=model, recluster_every=recluster_every,
                                 recluster_interval=recluster_interval, watch_settle=settle)
        roots = resolve_roots(paths)
        _refuse_if_busy(settings.home)  # before the model loads: a second daemon fails fast
        face_model = service.model_for_index(settings, settings.model)
        daemon = WatchDaemon(settings, face_model, roots, polling=poll,
                             progress=CatchUpProgress())
        restore = _stop_on_signals(daemon.stop, lambda: daemon.stopping)
        web = None
        if serve:
            from cli.serve_cmd import WebServer

            web = WebServer(settings, host="127.0.0.1", port=port, read_only=False,
                            beside_writer=True)
            web.start()
        try:
            typer.echo(f"faceidx: watching {', '.join(map(str, roots))} into {settings.home} "
                       f"with {face_model.info.name}; Ctrl-C to stop", err=True)
            report = daemon.run()
        finally:
            restore()
            if web is not None:
                web.stop()
        s = report.summary
        typer.echo(
            f"faceidx: watch stopped: new {s.new}, changed {s.changed}, moved {s.moved}, "
            f"copied {s.copied}, removed {s.removed}, failed {s.failed}; faces added "
            f"{s.faces_added}, removed {s.faces_removed}; {report.reclusters} recluster(s)",
            err=True)


class CatchUpProgress:
    """The daemon's catch-up on stderr, always: a line with count, total, rate and ETA every
    few seconds, and one when it is done."""

    EVERY = 5.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.total = self.done = 0
        self.started = self.last = 0.0

    def start(self, total: int, description: str) -> None:
        self.total, self.done = total, 0
        self.started = self.last = self.clock()
        typer.echo(f"faceidx: {description}: {total} file(s) to index", err=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.done < self.total and now - self.last < self.EVERY:
            return
        self.last = now
        typer.echo(f"faceidx: {self.line(now)}", err=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.done >= self.total:
            return (f"catch-up done: {self.done}/{self.total} files in "
                    f"{_duration(elapsed)} ({rate:.1f} files/s)")
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (f"catch-up: {self.done}/{self.total} files, {rate:.1f} files/s, "
                f"ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _refuse_if_busy(home: Path) -> None:
    from indexer.errors import IndexBusy
    from indexer.locks import IngestLock

    holder = IngestLock.holder(home) if home.is_dir() else None
    if holder is not None:
        who = f"{holder.get('purpose', 'faceidx')} (pid {holder.get('pid', '?')})"
        raise IndexBusy(f"{home}: {who} is already indexing this home; stop it first, "
                        "or use another --home")


def _stop_on_signals(stop: Callable[[], None],
                     stopping: Callable[[], bool]) -> Callable[[], None]:
    """SIGINT/SIGTERM call `stop()` (finish the batch in hand); returns a restore function.

    Signals can only be handled in the main thread; elsewhere (tests) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping():
            log.warning("%s again: still finishing the batch in hand", name)
            return
        log.warning("%s: finishing the batch in hand, then exiting", name)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
