"""The light commands, `status`, `people`, `name` and `history`, and `query`, declared once,
with argparse.

They must start fast at a million faces (issue 11: the light ones under 0.4 s cold, and
`query`'s own time beside its model under 0.3 s), and importing Typer (with click and, for its
parameter checks, pydantic) costs more than their work. So their options are declared here
only, with the standard library's argparse, and `faceidx` runs them without importing Typer
(`cli.fastpath.main`). The Typer app lists them too (`faceidx --help`) and hands
their arguments on to this module unparsed, so `CliRunner` tests and `faceidx status --help` go
through the same parser and the same code. Results on stdout, errors as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer import settings as settings_mod
from indexer.errors import FaceidxError

HOME_HELP = "Index home (default: $FACEIDX_HOME, else the user data dir)."


def _nonnegative(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw} is below 0")
    return value


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is below 1")
    return value


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"faceidx {name}", description=description)
    ap.add_argument("--home", type=Path, default=None, help=HOME_HELP)
    return ap


def _json_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", dest="json_out", action="store_true",
                    help="Print machine-readable JSON.")


def _status_parser() -> argparse.ArgumentParser:
    ap = _parser("status", "Counts, model and health of the index (fast: loads no model).")
    ap.add_argument("--failures", action="store_true", help="List failed files and why.")
    _json_flag(ap)
    return ap


def _people_parser() -> argparse.ArgumentParser:
    ap = _parser("people", "List people (clusters): id, name, size and the representative "
                 "(medoid) face.")
    _json_flag(ap)
    ap.add_argument("--limit", type=_nonnegative, default=100,
                    help="List at most this many (named first, then the largest); 0 lists all.")
    return ap


def _name_parser() -> argparse.ArgumentParser:
    ap = _parser("name", "Name the person a cluster shows; the name survives every recluster.")
    ap.add_argument("cluster", metavar="CLUSTER", help="Cluster id (or a person's current name).")
    ap.add_argument("new_name", metavar="NAME", help="The person's name.")
    return ap


def _history_parser() -> argparse.ArgumentParser:
    ap = _parser("history", "The corrections made so far, newest first; `faceidx undo` takes "
                 "back the newest.")
    ap.add_argument("--limit", type=_positive, default=50, help="How many changes.")
    _json_flag(ap)
    return ap


def _query_parser() -> argparse.ArgumentParser:
    ap = _parser("query", "Find the indexed faces most similar to each face in IMAGE.")
    ap.add_argument("image", metavar="IMAGE", type=Path, help="A photo with one or more faces.")
    ap.add_argument("--k", type=_positive, default=10, help="Matches per face.")
    _json_flag(ap)
    return ap


def _settings(args: argparse.Namespace) -> settings_mod.Settings:
    return settings_mod.load({"home": args.home})


def _echo_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def status(args: argparse.Namespace) -> None:
    from indexer import summary

    info = summary.status(_settings(args), with_failures=args.failures)
    if args.json_out:
        _echo_json(info)
        return
    model = info["model"]
    lines = [
        f"home:      {info['home']}",
        f"model:     {model['name']} ({model['dim']}-d, {model['weights']})" if model
        else "model:     (none yet)",
        f"images:    {info['images']} ({info['images_no_face']} with no face, "
        f"{info['failed']} failed)",
        f"faces:     {info['faces']} ({info['unassigned']} unassigned)",
        f"clusters:  {info['clusters']}  people: {info['people']}",
    ]
    running = info["indexer_running"]
    if running is not None:
        import datetime

        since = running.get("since")
        when = datetime.datetime.fromtimestamp(since).isoformat(" ", "seconds") if since else "?"
        line = f"running:   {running.get('purpose', 'faceidx')} (pid {running.get('pid')}) " \
               f"since {when}"
        if "queued" in running:
            line += f", {running['queued']} files queued, {running.get('mode', '?')}, " \
                    f"{running.get('state', '?')}"
        lines.append(line)
    else:
        lines.append("running:   no daemon on this home")
    lines += [f"failed:    {item['path']}: {item['reason']}" for item in info.get("failures", [])]
    print("\n".join(lines))


def people(args: argparse.Namespace) -> None:
    from indexer import summary

    rows, total = summary.people_top(_settings(args), args.limit or None)
    if args.json_out:
        _echo_json(rows)
        return
    if not rows:
        print("no clusters yet; run `faceidx recluster`", file=sys.stderr)
        return
    lines = [f"{'CLUSTER':>7}  {'NAME':<24} {'FACES':>6}  {'MEDOID':>7}  "
             f"{'BOX (x1,y1,x2,y2)':<26} PHOTO"]
    for r in rows:
        box = ",".join(f"{v:g}" for v in r["medoid_bbox"]) if r["medoid_bbox"] else "-"
        medoid = "-" if r["medoid_face_id"] is None else r["medoid_face_id"]
        lines.append(f"{r['cluster_id']:>7}  {r['name'] or '-':<24} {r['size']:>6}  "
                     f"{medoid:>7}  {box:<26} {r['medoid_path'] or ''}")
    print("\n".join(lines))
    if total > len(rows):
        print(f"... and {total - len(rows)} more clusters (--limit 0 lists all)",
              file=sys.stderr)


def name(args: argparse.Namespace) -> None:
    from indexer import corrections

    change = corrections.rename(_settings(args), args.cluster, args.new_name)
    print(f"{change.summary} (change {change.change_id}; `faceidx undo` takes it back)")


def history(args: argparse.Namespace) -> None:
    from indexer import summary

    changes = summary.history(_settings(args), args.limit)
    if args.json_out:
        _echo_json(changes)
        return
    if not changes:
        print("no corrections yet", file=sys.stderr)
        return
    lines = [f"{'CHANGE':>6}  {'WHEN':<19}  {'KIND':<6}  WHAT"]
    for c in changes:
        mark = " (undone)" if c["undone"] else ""
        lines.append(f"{c['change_id']:>6}  {c['at'].replace('T', ' '):<19}  {c['kind']:<6}  "
                     f"{c['summary']}{mark}")
    print("\n".join(lines))


def query(args: argparse.Namespace) -> int:
    from indexer import query as query_case

    results = query_case.query_image(_settings(args), args.image, args.k)
    if not results:
        if args.json_out:
            _echo_json([])
        print(f"faceidx: no face found in {args.image}", file=sys.stderr)
        return 1
    if args.json_out:
        _echo_json([r.to_json() for r in results])
        return 0
    lines = []
    for n, face in enumerate(results, 1):
        x1, y1, x2, y2 = (round(v) for v in face.bbox)
        lines.append(f"face {n} at ({x1}, {y1}, {x2}, {y2}):")
        for m in face.matches:
            who = m.person or (f"cluster {m.cluster_id}" if m.cluster_id not in (None, -1)
                               else "unassigned")
            mark = "  (this photo: left out of the verdict)" if m.this_photo else ""
            lines.append(f"  {m.distance:.3f}  face {m.face_id:<6} {who:<20} {m.path}{mark}")
            if m.assign_reason:
                dist = "" if m.assign_distance is None else \
                    f"; {m.assign_distance:.3f} from its centroid"
                lines.append(f"         {'':<11} ({m.assign_reason}{dist})")
        lines.append(f"  {face.verdict.line()}" if face.verdict is not None
                     else "  nobody known yet: no people in the index (run `faceidx recluster`)")
    print("\n".join(lines))
    return 0


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser],
                          Callable[[argparse.Namespace], int | None]]] = {
    "status": (_status_parser, status),
    "people": (_people_parser, people),
    "name": (_name_parser, name),
    "history": (_history_parser, history),
    "query": (_query_parser, query),
}
"""Each light command: its parser and what it runs."""


def description(command: str) -> str:
    return COMMANDS[command][0]().description or ""


def run(command: str, argv: list[str]) -> int:
    """Parse argv for `command` and run it; returns the exit code (argparse exits itself on
    --help and on a bad argument, with 0 and 2, as Typer does)."""
    make_parser, func = COMMANDS[command]
    args = make_parser().parse_args(argv)
    try:
        code = func(args) or 0
    except FaceidxError as exc:
        print(f"faceidx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("faceidx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `faceidx people | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


def setup_logging(verbose: int) -> None:
    """Log lines of `indexer` on stderr (rich ones on a terminal); -v info, -vv debug."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger("indexer")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False,
                              markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("faceidx: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
