"""Run the light commands (status, people, name, history) without Typer's parameter machinery.

Typer 0.29 checks every parameter through a pydantic TypeAdapter, and importing pydantic costs
more than the work `faceidx status` does at a million faces. For a light command with plain
options this module builds an argparse parser from the command's own Typer annotations (so the
options are declared once, in the command) and calls the same function. Anything it does not
handle (--help, a parse error, an unusual option type) falls back to Typer, which gives the usual
help and error messages.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from typer.models import ArgumentInfo, OptionInfo

LIGHT_COMMANDS = frozenset({"status", "people", "name", "history"})
_SCALARS: dict[Any, Callable[[str], Any]] = {str: str, int: int, float: float, Path: Path}


class _Unsupported(Exception):
    """The fast path cannot parse this command line; Typer will."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise _Unsupported(message)


def run(app: typer.Typer, argv: Sequence[str]) -> bool:
    """Run argv if it is a light command the fast path can parse; False to let Typer do it."""
    args = list(argv)
    verbose = 0
    while args and args[0] in ("-v", "--verbose", "-vv", "-vvv"):
        verbose += 1 if args[0] in ("-v", "--verbose") else len(args[0]) - 1
        args.pop(0)
    if not args or args[0] not in LIGHT_COMMANDS or "--help" in args or "-h" in args:
        return False
    func = _command(app, args[0])
    if func is None:
        return False
    try:
        kwargs = _parse(func, args[0], args[1:])
    except _Unsupported:
        return False
    callback = app.registered_callback
    if callback is not None and callback.callback is not None:
        callback.callback(verbose=verbose)
    try:
        func(**kwargs)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    return True


def _command(app: typer.Typer, name: str) -> Callable[..., Any] | None:
    for info in app.registered_commands:
        callback = info.callback
        if callback is not None and (info.name or callback.__name__.replace("_", "-")) == name:
            return callback
    return None


def _parse(func: Callable[..., Any], name: str, argv: list[str]) -> dict[str, Any]:
    target = inspect.unwrap(func)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:  # an annotation the fast path cannot resolve
        raise _Unsupported(str(exc)) from exc
    parser = _Parser(prog=f"faceidx {name}", add_help=False)
    for pname, param in inspect.signature(target).parameters.items():
        hint = hints.get(pname)
        if typing.get_origin(hint) is not typing.Annotated:
            raise _Unsupported(pname)
        base, *meta = typing.get_args(hint)
        info = next((m for m in meta if isinstance(m, OptionInfo | ArgumentInfo)), None)
        if info is None:
            raise _Unsupported(pname)
        kind = _scalar(base)
        default = None if param.default is inspect.Parameter.empty else param.default
        if isinstance(info, ArgumentInfo):
            parser.add_argument(pname, type=_SCALARS[kind], metavar=pname.upper(),
                                **({} if param.default is inspect.Parameter.empty
                                   else {"nargs": "?", "default": default}))
            continue
        decls = [d for decl in info.param_decls or () for d in decl.split("/")[:1]
                 if d.startswith("-")] or [f"--{pname.replace('_', '-')}"]
        if getattr(info, "count", False):
            parser.add_argument(*decls, dest=pname, action="count", default=default or 0)
        elif kind is bool:
            parser.add_argument(*decls, dest=pname, action="store_true", default=bool(default))
        else:
            parser.add_argument(*decls, dest=pname, type=_bounded(_SCALARS[kind], info),
                                default=default)
    return vars(parser.parse_args(argv))


def _bounded(convert: Callable[[str], Any], info: OptionInfo) -> Callable[[str], Any]:
    """`convert`, refusing values outside the option's min/max (Typer then reports them)."""
    low, high = getattr(info, "min", None), getattr(info, "max", None)
    if low is None and high is None:
        return convert

    def check(raw: str) -> Any:
        value = convert(raw)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{raw} is out of range")
        return value

    return check


def _scalar(annotation: Any) -> Any:
    """The one scalar type behind `X` or `X | None`; anything else is unsupported."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) != 1:
            raise _Unsupported(repr(annotation))
        annotation = rest[0]
    if annotation is bool or annotation in _SCALARS:
        return annotation
    raise _Unsupported(repr(annotation))
