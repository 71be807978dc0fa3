"""Screenshots of each page of `faceidx serve`, as a user sees them, for the README.

    uv run python scripts/web_screenshots.py --home HOME [--out docs/screenshots]
        [--search PHOTO] [--chromium /usr/bin/chromium]

Starts the web app on a free port of 127.0.0.1 in this process (nothing is changed in the
index: pages are only looked at), drives Debian's chromium with Playwright, and writes one
PNG per page.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--search", type=Path, help="a photo to upload on the search page")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from cli.serve_cmd import WebServer
    from indexer import browse
    from indexer import settings as settings_mod

    settings = settings_mod.load({"home": args.home})
    server = WebServer(settings, host="127.0.0.1", port=0, read_only=False)
    server.start()
    url = server.url.rstrip("/")
    people = browse.people_page(settings, None, 0, 100).people
    named = next((p for p in people if p.name), people[0])
    other = next(p for p in people if p.cluster_id != named.cluster_id)
    photo = browse.person_page(settings, named.cluster_id, 0, 1).faces[0].image_id
    group = max(({f.image_id: 0 for f in []} or {}).items(), default=None)
    del group
    pages = {
        "people": "/",
        "person": f"/people/{named.cluster_id}",
        "merge": f"/people/{other.cluster_id}/merge?into={named.cluster_id}",
        "unassigned": "/unassigned",
        "photo": f"/photos/{photo}",
        "status": "/status",
        "search": "/search",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        for name, path in pages.items():
            page.goto(url + path)
            page.wait_for_load_state("networkidle")
            if name == "search" and args.search:
                page.set_input_files("input[name=photo]", str(args.search))
                page.click("button.primary")
                page.wait_for_selector("section.result, p.empty", timeout=60_000)
                page.wait_for_load_state("networkidle")
            target = args.out / f"{name}.png"
            page.screenshot(path=str(target), full_page=name not in ("people",))
            print(target)
        browser.close()
    server.stop()


if __name__ == "__main__":
    main()
