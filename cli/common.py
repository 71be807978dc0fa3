"""What every command shares: settings, consoles, progress, and errors turned into one line."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from cli.light import setup_logging  # noqa: F401  (one logging setup for every command)
from indexer import settings as settings_mod
from indexer.errors import FaceidxError

if TYPE_CHECKING:  # rich loads only for a progress bar or a terminal's log lines
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Index home (default: $FACEIDX_HOME, else the user data dir).",
                 show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _flags_read_as_flags() -> None:
    """Typer 0.29 prints a type after every on/off flag in --help (`--json <bool>`), as if it
    took a value; show flags bare, as they are typed."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "faceidx_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if (self.is_bool_flag or self.count) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich.faceidx_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_read_as_flags()


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def load_settings(home: Path | None, **overrides: Any) -> settings_mod.Settings:
    return settings_mod.load({"home": home, **overrides})


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def handle_errors(func: F) -> F:
    """Library errors become one line on stderr and a non-zero exit code, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FaceidxError as exc:
            typer.echo(f"faceidx: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("faceidx: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class BarProgress:
    """Progress on stderr implementing indexer.pipeline.Progress: a rich bar on a terminal,
    otherwise a plain line every 10% (and at most every 30 s) for logs."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._tty = sys.stderr.isatty()
        self._total = 0
        self._done = 0
        self._last_line = 0.0
        self._last_step = -1
        self._description = ""
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err_console(),
            transient=False, disable=not sys.stderr.isatty(),
        )
        self._task: Any = None

    def __enter__(self) -> BarProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def start(self, total: int, description: str) -> None:
        self._task = self._progress.add_task(description, total=total)
        self._total, self._done, self._description = total, 0, description
        self._last_line = time.monotonic()

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)
        if self._tty or not self._total:
            return
        self._done += n
        step = self._done * 10 // self._total
        now = time.monotonic()
        if step != self._last_step or now - self._last_line > 30:
            self._last_step, self._last_line = step, now
            typer.echo(f"faceidx: {self._description}: {self._done}/{self._total}",
                       err=True)
