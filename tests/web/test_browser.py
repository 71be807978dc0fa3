"""End-to-end in a real headless Chromium (Debian's package, driven by Playwright through
`executable_path`), against the real server on 127.0.0.1 over a real dlib index; and the real
`faceidx serve` command in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer import browse, service
from indexer.settings import Settings

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("FACEIDX_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set FACEIDX_CHROMIUM); "
                    "CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def server(web_settings: Settings, dlib_model) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app served by uvicorn on a free port of 127.0.0.1, in a thread; yields its URL."""
    from cli.serve_cmd import WebServer

    web = WebServer(web_settings, host="127.0.0.1", port=0, read_only=False,
                    query_model=dlib_model)
    web.start()
    yield web.url.rstrip("/")
    web.stop()


@pytest.fixture
def page(browser, server: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def _people(settings: Settings) -> dict[int, dict]:
    return {p["cluster_id"]: p for p in service.people(settings)}


def test_people_page_loads_every_crop(page, server: str, web_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    page.goto(server + "/")
    page.wait_for_load_state("networkidle")
    sizes = page.eval_on_selector_all(
        "ul.people img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == len(_people(web_settings)) >= 3
    assert all(done and width > 0 for done, width in sizes), sizes


def test_rename_merge_undo_reject_in_the_browser(page, server: str,  # type: ignore[no-untyped-def]
                                                 web_settings: Settings) -> None:
    people = list(_people(web_settings).values())
    a, b = people[0]["cluster_id"], people[1]["cluster_id"]
    size_a, size_b = people[0]["size"], people[1]["size"]

    # rename
    page.goto(f"{server}/people/{a}")
    page.fill("input[name=name]", "Alice")
    with page.expect_navigation():
        page.click("text=Save name")
    assert "Alice" in page.inner_text("h1")
    assert _people(web_settings)[a]["name"] == "Alice"

    # merge b into Alice, after the preview
    page.goto(f"{server}/people/{b}")
    page.fill("input[name=into]", "Alice")
    page.click("text=Preview merge")
    page.wait_for_selector("text=What it will do")
    assert page.locator(".side").count() == 2
    with page.expect_navigation():
        page.click("button.primary")
    assert page.url.endswith(f"/people/{a}")
    after = _people(web_settings)
    assert b not in after and after[a]["size"] == size_a + size_b

    # one click to undo it
    assert "merged" in page.inner_text(".undo-bar").lower()
    with page.expect_navigation():
        page.click("button.undo")
    restored = _people(web_settings)
    assert restored[a]["size"] == size_a and restored[b]["size"] == size_b

    # reject one face of Alice
    page.goto(f"{server}/people/{a}")
    first = page.locator("input[name=face_ids]").first
    face_id = int(first.get_attribute("value"))
    first.check()
    assert page.inner_text(".selected-count") == "1 selected"
    with page.expect_navigation():
        page.click("text=Not Alice")
    faces = {f.face_id for f in browse.person_page(web_settings, a).faces}
    assert face_id not in faces and len(faces) == size_a - 1

    # a refused action shows its reason and changes nothing
    page.fill("input[name=name]", "   ")
    page.eval_on_selector("input[name=name]", "e => e.removeAttribute('required')")
    page.click("text=Save name")
    page.wait_for_selector("#flash:not([hidden])")
    assert "blank" in page.inner_text("#flash")
    assert _people(web_settings)[a]["name"] == "Alice"


def test_search_by_photo_upload(page, server: str, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto(server + "/search")
    page.set_input_files("input[name=photo]", str(faces_dir / "group_photos" /
                                                  "fr_kit_with_rose.jpg"))
    page.click("button.primary")
    page.wait_for_selector("section.result")
    assert page.locator("section.result").count() == 2
    page.wait_for_function("() => [...document.querySelectorAll('section.result img')]"
                           ".every(i => i.complete)")
    widths = page.eval_on_selector_all("section.result img",
                                       "imgs => imgs.map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)


def test_faceidx_serve_command(web_settings: Settings) -> None:
    """The real command: prints its URL, serves the catalog, refuses a foreign Host, stops on
    SIGINT."""
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "cli.app", "serve", "--home",
                             str(web_settings.home), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()  # type: ignore[union-attr]
        people = httpx.get(url + "api/people", timeout=30).json()
        assert people == service.people(web_settings)
        assert httpx.get(url + "api/people", headers={"Host": "evil.test"},
                         timeout=30).status_code == 403
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
