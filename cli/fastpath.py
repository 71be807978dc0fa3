"""The `faceidx` entry point: light commands without Typer, everything else through Typer.

`faceidx status`, `people`, `name`, `history` and `query` (cli/light.py, argparse) import
neither Typer nor click nor pydantic, which together cost more than the work of `status` at a
million faces (and a third of `query`'s budget beside its model).
Every other command, and `faceidx --help`, goes to the Typer app in cli/app.py.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

VERBOSE_FLAGS = {"-v": 1, "--verbose": 1, "-vv": 2, "-vvv": 3}


def run(argv: Sequence[str]) -> int | None:
    """Run argv if it is a light command; its exit code, or None to let Typer run it."""
    from cli import light

    args = list(argv)
    verbose = 0
    while args and args[0] in VERBOSE_FLAGS:
        verbose += VERBOSE_FLAGS[args.pop(0)]
    if not args or args[0] not in light.COMMANDS:
        return None
    if args[0] == "query":
        gc.enable()  # its model's garbage is worth collecting (main disables the collector)
    light.setup_logging(verbose)
    return light.run(args[0], args[1:])


def main() -> None:
    # A light command lives a fraction of a second: no garbage collection while it runs (its
    # imports alone set off several full ones), and none over all it made when Python exits
    # (30-40 ms of `faceidx name` at a million faces, 15 ms of `status`): frozen, the objects
    # are left to the process's end. Exit handlers still run and the streams are flushed.
    # `query` (it runs a model) and any other command get the collector back before they
    # start.
    gc.disable()
    code = run(sys.argv[1:])
    if code is None:
        gc.enable()
        from cli.app import app

        app()
    else:
        gc.freeze()
        sys.exit(code)
