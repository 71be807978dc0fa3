"""The faceidx command line: a thin layer over indexer.service. Results go to stdout, progress
and logs to stderr. Heavy libraries (torch, dlib) are imported only by commands that need them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from cli.common import (
    BarProgress,
    HomeOption,
    JsonOption,
    echo_json,
    handle_errors,
    load_settings,
    setup_logging,
)

app = typer.Typer(
    name="faceidx",
    help="A local, private face indexer for personal photo libraries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="auto, facenet, sface or dlib (a new index defaults to auto: "
                 "facenet if its weights can be had, else sface; an existing index keeps its "
                 "own).", show_default=False),
]


@app.callback()
def _main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More logging on stderr (-vv for debug).")] = 0,
) -> None:
    setup_logging(verbose)


class _IndexCommand(TyperCommand):
    """`index`, whose `--ray` takes an optional ADDRESS (Typer has no such option)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if "--ray" in args:
            from indexer.distributed import ray_value_optional

            args = ray_value_optional(args)
        return super().parse_args(ctx, args)


@app.command(cls=_IndexCommand)
@handle_errors
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders (or files) of photos.")],
    model: ModelOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]", show_default=False,
        help="Run the model on Ray (needs the `ray` extra). Alone: a Ray instance started on this "
             "machine; with ADDRESS (auto, ray://HOST:PORT or HOST:PORT): join that cluster.")
    ] = None,
    ray_read: Annotated[str, typer.Option(
        "--ray-read", help="How Ray workers get photos: driver (bytes sent from this machine; "
             "needs no shared storage) or shared (workers read the same path).")] = "driver",
    ray_actors: Annotated[int | None, typer.Option(
        "--ray-actors", help="Ray actors holding the model (default: as many as fit).",
        show_default=False)] = None,
    ray_cpus_per_actor: Annotated[float, typer.Option("--ray-cpus-per-actor")] = 1.0,
    ray_gpus_per_actor: Annotated[float, typer.Option("--ray-gpus-per-actor")] = 0.0,
) -> None:
    """Index photos under PATHS: new, changed, moved and deleted files are brought in line."""
    from contextlib import nullcontext
    from dataclasses import asdict

    from indexer import service
    from indexer.distributed import RayOptions, ray_analyzer
    from indexer.locks import IngestLock
    from indexer.pipeline import Indexer, resolve_roots

    settings = load_settings(home, model=model)
    roots = resolve_roots(paths)
    face_model = service.model_for_index(settings, settings.model)
    on_ray = nullcontext() if ray is None else ray_analyzer(
        face_model.info.name, settings, RayOptions(ray, ray_read, ray_actors, ray_cpus_per_actor,
                                                   ray_gpus_per_actor))
    with IngestLock(settings.home, "faceidx index"), on_ray as analyzer, \
            service.open_for_writing(settings, face_model) as store, \
            Indexer(store, face_model, settings, analyzer=analyzer) as indexer, \
            BarProgress() as bar:
        summary = indexer.index(roots, bar)
    if json_out:
        echo_json(asdict(summary))
        return
    typer.echo(
        f"new {summary.new}, changed {summary.changed}, unchanged {summary.unchanged}, "
        f"moved {summary.moved}, copied {summary.copied}, removed {summary.removed}, "
        f"failed {summary.failed}; faces added {summary.faces_added}, "
        f"removed {summary.faces_removed}"
    )
    for path, reason in summary.failures:
        typer.echo(f"failed: {path}: {reason}", err=True)


def _register_light(app: typer.Typer) -> None:
    """List the light commands and `query` (cli/light.py) in Typer's help and hand their
    arguments on, unparsed, to their one argparse declaration (the entry point runs them
    without Typer)."""
    from cli import light

    def forwarder(command: str) -> Callable[[typer.Context], None]:
        def forward(ctx: typer.Context) -> None:
            code = light.run(command, list(ctx.args))
            if code:
                raise typer.Exit(code)

        forward.__doc__ = light.description(command)
        return forward

    for command in light.COMMANDS:
        app.command(command, add_help_option=False, context_settings={
            "allow_extra_args": True, "ignore_unknown_options": True})(forwarder(command))


_register_light(app)

from cli import cluster_cmds, export_cmd, serve_cmd, watch_cmd  # noqa: E402  (commands in own modules)

watch_cmd.register(app)
serve_cmd.register(app)
cluster_cmds.register(app)
export_cmd.register(app)


def main() -> None:
    """The `faceidx` entry point (cli.fastpath.main: light commands skip Typer)."""
    from cli import fastpath

    fastpath.main()


if __name__ == "__main__":  # `python -m cli.app` (the tests and scripts start subprocesses so)
    main()
