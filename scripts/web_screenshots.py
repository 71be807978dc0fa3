"""Screenshots of each page of `faceidx serve`, as a user sees them, for the README.

    uv run python scripts/web_screenshots.py --home HOME [--out docs/screenshots]
        [--search PHOTO] [--chromium /usr/bin/chromium]

Starts the web app on a free port of 127.0.0.1 in this process (nothing is changed in the
index: pages are only looked at), drives Debian's chromium with Playwright, and writes one
PNG per page.
"""

from __future__ import annotations

import argparse
from collections import Counter
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
    parser.add_argument("--person", help="the person page to show (name or id; default: the "
                        "first named)")
    parser.add_argument("--merge", nargs=2, metavar=("OTHER", "INTO"),
                        help="the merge preview to show (default: an unnamed person into the "
                        "first named)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from cli.serve_cmd import WebServer
    from indexer import browse
    from indexer import settings as settings_mod
    from indexer.store import Store

    settings = settings_mod.load({"home": args.home})
    server = WebServer(settings, host="127.0.0.1", port=0, read_only=False)
    server.start()
    url = server.url.rstrip("/")
    people = browse.people_page(settings, None, 0, 100).people
    named = next((p for p in people if p.name), people[0]).cluster_id
    other = next((p for p in people if not p.name), people[-1]).cluster_id
    person = browse.resolve_person(settings, args.person) if args.person else named
    if args.merge:
        other, named = (browse.resolve_person(settings, ref) for ref in args.merge)
    with Store.open(settings, read_only=True) as store:
        per_photo = Counter(f.image_id for f in store.faces())
    photo = per_photo.most_common(1)[0][0]  # the photo with the most faces
    pages = {
        "people": "/",
        "person": f"/people/{person}",
        "merge": f"/people/{other}/merge?into={named}",
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
            if name == "person":  # a selection, as when correcting
                for box in page.locator("input[name=face_ids]").all()[:2]:
                    box.check()
            if name == "search" and args.search:
                page.set_input_files("input[name=photo]", str(args.search))
                page.click("button.primary")
                page.wait_for_selector("section.result, p.empty", timeout=60_000)
                page.wait_for_load_state("networkidle")
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            target = args.out / f"{name}.png"
            page.screenshot(path=str(target), full_page=name not in ("people",))
            print(target)
        browser.close()
    server.stop()


if __name__ == "__main__":
    main()
