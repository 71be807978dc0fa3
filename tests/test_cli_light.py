"""Commands that must stay light: no torch for status and --help."""

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
