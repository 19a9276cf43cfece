"""Draw the documentation's pictures: a preview, a palette swatch and dithering / colour-space crops.

    python examples/readme_pictures.py [OUTDIR]     # default: docs/images

Uses real photographs shipped inside scikit-learn and scikit-image (no download) and only
bigquant's public API. The README and the user guide show the committed copies
(docs/images/); run this after a change that alters them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import dask.array as da
import numpy as np
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_image

import bigquant

#: Region of flower.jpg with a smooth out-of-focus background and petals (rows, columns).
CROP = (slice(10, 150), slice(120, 330))
ZOOM = 3


def mosaic() -> da.Array:
    """A 2 x 3 mosaic of photographs, built lazily (1281 x 1920 pixels)."""
    photos = [
        load_sample_image("china.jpg"),
        load_sample_image("flower.jpg"),
        skimage.data.coffee()[:427, :600],
        skimage.data.chelsea()[:300, :451],
        skimage.data.astronaut()[:427, :512],
        skimage.data.rocket()[:427, :427],
    ]
    tiles = [np.pad(p, ((0, 427 - p.shape[0]), (0, 640 - p.shape[1]), (0, 0))) for p in photos]
    rows = [np.concatenate(tiles[i : i + 3], axis=1) for i in (0, 3)]
    return da.from_array(np.concatenate(rows), chunks=(512, 512, 3))


def labelled_strip(crops: list[tuple[str, np.ndarray]]) -> Image.Image:
    """Crops side by side, zoomed without smoothing, each with a caption above it."""
    from PIL import ImageDraw, ImageFont

    h, w = crops[0][1].shape[:2]
    canvas = Image.new("RGB", (len(crops) * (w * ZOOM + 8), h * ZOOM + 20), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i, (caption, pixels) in enumerate(crops):
        tile = Image.fromarray(pixels).resize((w * ZOOM, h * ZOOM), Image.NEAREST)
        canvas.paste(tile, (i * (w * ZOOM + 8), 20))
        draw.text((i * (w * ZOOM + 8), 4), caption, fill="black", font=font)
    return canvas


def main(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Preview and palette of a 64-colour store of the mosaic.
        bigquant.compress(mosaic(), tmp / "mosaic.zarr", n_colors=64, overwrite=True)
        bigquant.preview(tmp / "mosaic.zarr", outdir / "preview.png", max_size=640, overwrite=True)
        bigquant.palette_image(
            tmp / "mosaic.zarr", outdir / "palette.png", sort="count", overwrite=True
        )

        # Dithering and colour spaces at 12 colours, on a crop of one photograph.
        flower = load_sample_image("flower.jpg")
        crops = [("original", flower[CROP])]
        for name, options in [
            ("12 colours", {}),
            ("ordered", {"dither": "ordered"}),
            ("floyd-steinberg", {"dither": "floyd-steinberg"}),
            ("oklab", {"space": "oklab"}),
        ]:
            store = tmp / f"{name}.zarr"
            meta = bigquant.compress(flower, store, n_colors=12, overwrite=True, **options)
            quantized = bigquant.open_store(store).quantized()[CROP].compute()
            caption = f"{name}: {meta.psnr:.1f} dB, dE {meta.delta_e:.2f}"
            crops.append((caption, quantized))
            print(caption)
        labelled_strip(crops[:4]).save(outdir / "dither.png")
        labelled_strip([crops[0], crops[1], crops[4]]).save(outdir / "space.png")
    print(f"wrote preview.png, palette.png, dither.png and space.png to {outdir}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
