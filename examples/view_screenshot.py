"""Take the documentation's screenshot of ``bigquant view``: docs/images/view.png.

    python examples/view_screenshot.py [OUT]        # needs playwright and Debian's chromium

Compresses the mosaic of real photographs that readme_pictures.py draws (scikit-learn's and
scikit-image's sample images, no download) to 32 colours from a TIFF, serves it as
``bigquant view`` does, and photographs the page in a headless chromium with one palette
colour highlighted and a pixel hovered. The screenshot is saved with 256 colours, which
holds the page's few colours exactly and keeps the file small.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import tifffile
from PIL import Image
from playwright.sync_api import sync_playwright
from readme_pictures import mosaic

import bigquant
from bigquant.view import Server, Viewer

CHROMIUM = "/usr/bin/chromium"


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, store = Path(tmp) / "photos.tif", Path(tmp) / "photos.zarr"
        tifffile.imwrite(src, mosaic().compute(), tile=(256, 256), photometric="rgb")
        bigquant.compress(src, store, 32)
        with Viewer(store) as viewer, Server(viewer) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1000, "height": 560}, bypass_csp=True)
                page.goto(server.url)
                page.wait_for_function("window.bigquant && window.bigquant.complete")
                # The flower and the temple, a little closer; the flower's petal colour lit.
                page.evaluate("window.bigquant.goto(1000, 427, 0.66)")
                page.wait_for_function("window.bigquant.complete")
                labels = bigquant.open_store(store).labels[100:330, 780:1100]
                counts = [(int((labels == i).sum()), i) for i in range(32)]
                petal = max(counts)[1]
                page.locator(f'#palette li[data-label="{petal}"]').click()
                box = page.locator("#canvas").bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.wait_for_function("document.getElementById('hover').dataset.label")
                page.wait_for_function("window.bigquant.complete")
                page.wait_for_timeout(200)
                shot = Path(tmp) / "shot.png"
                page.screenshot(path=str(shot))
                browser.close()
            server.shutdown()
        with Image.open(shot) as image:
            image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
                out, optimize=True
            )
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/view.png"))
