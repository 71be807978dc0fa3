"""Commands that must stay light: no torch for status and --help."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import sys
from typer.testing import CliRunner
from cli.app import app
r = CliRunner().invoke(app, sys.argv[1:])
assert 'torch' not in sys.modules, 'torch was imported'
assert 'dlib' not in sys.modules, 'dlib was imported'
print(r.exit_code)
"""


def _run(args: list[str], home: Path) -> str:
    env = {**os.environ, "FACEIDX_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_help_and_status_do_not_import_models(cli, faces_dir: Path, copy_photos, home: Path
                                              ) -> None:  # type: ignore[no-untyped-def]
    files = copy_photos([faces_dir / "broken" / "rgba.png"])
    cli("index", "--model", "dlib", str(files[0].parent))
    assert _run(["--help"], home) == "0"
    assert _run(["status", "--json"], home) == "0"


ENTRY_PROBE = """
import sys
from cli import fastpath
code = fastpath.run(sys.argv[1:])
for heavy in ('typer', 'click', 'pydantic', 'torch', 'dlib', 'faiss'):
    assert heavy not in sys.modules, heavy + ' was imported'
print('exit', code)
"""


def test_light_commands_skip_typer(cli, faces_dir: Path, copy_photos, home: Path
                                   ) -> None:  # type: ignore[no-untyped-def]
    """The `faceidx` entry point runs status, people, name and history without Typer; the Typer
    app hands the same arguments to the same parser (help, errors, results)."""
    files = copy_photos([faces_dir / "broken" / "rgba.png"])
    cli("index", "--model", "dlib", str(files[0].parent))
    env = {**os.environ, "FACEIDX_HOME": str(home)}
    for args in (["status", "--json"], ["people", "--limit", "5"], ["history"]):
        out = subprocess.run([sys.executable, "-c", ENTRY_PROBE, *args], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("exit 0"), out.stdout
    assert json.loads(cli("status", "--json").stdout)["images"] == 1
    helped = cli("status", "--help")
    assert "--failures" in helped.stdout and "usage: faceidx status" in helped.stdout
    bad = cli("people", "--limit", "-1", ok=False)
    assert bad.exit_code == 2
    missing = cli("name", "999", "Nobody", ok=False)
    assert missing.exit_code != 0 and "faceidx: error:" in missing.stderr


RECLUSTER_PROBE = """
import sys
from typer.testing import CliRunner
from cli.app import app
r = CliRunner().invoke(app, ['recluster'])
assert r.exit_code == 0, r.output
for heavy in ('sklearn', 'pandas', 'scipy.stats', 'torch'):
    assert heavy not in sys.modules, heavy + ' was imported'
print('ok')
"""


def test_recluster_leaves_scikit_learn_unimported(cli, faces_dir: Path, copy_photos, home: Path
                                                  ) -> None:  # type: ignore[no-untyped-def]
    """The default recluster needs no scikit-learn (only `eval`'s scores and the comparison
    algorithms do): importing it cost every recluster 1.3 s and 125 MB of its peak."""
    files = copy_photos([faces_dir / "group_photos" / "opencv_group1.jpg"])
    cli("index", "--model", "dlib", str(files[0].parent))
    env = {**os.environ, "FACEIDX_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", RECLUSTER_PROBE], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
