"""Screenshots of the Diagnose tab for ``docs/app.md``: the app on the bundled models, a bundled sample uploaded,
the page at 1400 px (desktop) and 400 px (phone) wide.

    python -m scripts.app_screenshots            # docs/app-diagnose-1400.png, docs/app-diagnose-400.png

Needs Debian's chromium and Playwright (as the browser tests). PNGs are stored with a 256-colour palette to stay small.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image

from kdcore.paths import samples_dir

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
WIDTHS = (1400, 400)


def diagnose_screenshots(url: str, upload: Path, out: Path, widths: tuple[int, ...] = WIDTHS) -> list[Path]:
    """``out/app-diagnose-<width>.png`` of the Diagnose tab at ``url`` after uploading ``upload``, one per width."""
    from playwright import sync_api

    written = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for width in widths:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(str(upload))
            sync_api.expect(page.locator("#heatmaps img")).to_have_count(4, timeout=120_000)
            for img in page.locator("#heatmaps img").all():  # lazily loaded: bring each in once
                img.scroll_into_view_if_needed()
            page.wait_for_function("[...document.querySelectorAll('#heatmaps img')].every(i => i.complete)")
            page.evaluate("window.scrollTo(0, 0)")
            png = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
            path = out / f"app-diagnose-{width}.png"
            png.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
            written.append(path)
            page.close()
        browser.close()
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--sample", type=Path, default=samples_dir() / "glioma_1.jpg")
    a = ap.parse_args(argv)
    from kdcore_app import build_demo
    from kdcore_app.demo import THEME

    demo = build_demo().queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                            theme=THEME)
    try:
        for path in diagnose_screenshots(url, a.sample, a.out):
            print(f"{path} ({path.stat().st_size // 1024} KiB)")
    finally:
        demo.close()


if __name__ == "__main__":
    main()
