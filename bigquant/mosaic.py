"""Realistic large test inputs: mosaics of real photographs, written tile by tile.

The photographs are scikit-learn's sample images (installed with dask-ml's
scikit-learn dependency), placed on a grid with random flips so that the
mosaic has real photographic colour statistics at any size. Only one row of
tiles is held in memory while writing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def photographs() -> list[np.ndarray]:
    """scikit-learn's two sample photographs (427 x 640 RGB each)."""
    from sklearn.datasets import load_sample_image

    return [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]


class Mosaic:
    """An RGB mosaic of ``photos`` with random flips, any region of it computed on demand."""

    def __init__(
        self, height: int, width: int, *, photos: list[np.ndarray] | None = None, seed: int = 0
    ):
        photos = photos if photos is not None else photographs()
        cell_h = min(p.shape[0] for p in photos)
        cell_w = min(p.shape[1] for p in photos)
        # Every photo in all four flips, cropped to a common cell size.
        self._variants = [
            np.ascontiguousarray(v[:cell_h, :cell_w])
            for p in photos
            for v in (p, p[::-1], p[:, ::-1], p[::-1, ::-1])
        ]
        self.shape = (height, width, 3)
        self._cell = (cell_h, cell_w)
        rows, cols = -(-height // cell_h), -(-width // cell_w)
        self._grid = np.random.default_rng(seed).integers(0, len(self._variants), (rows, cols))

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of the mosaic."""
        ch, cw = self._cell
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for gy in range(y0 // ch, (y1 - 1) // ch + 1):
            for gx in range(x0 // cw, (x1 - 1) // cw + 1):
                ya, yb = max(y0, gy * ch), min(y1, (gy + 1) * ch)
                xa, xb = max(x0, gx * cw), min(x1, (gx + 1) * cw)
                cell = self._variants[self._grid[gy, gx]]
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = cell[
                    ya - gy * ch : yb - gy * ch, xa - gx * cw : xb - gx * cw
                ]
        return out

    def tiles(self, tile: int) -> Iterator[np.ndarray]:
        """Tiles in TIFF order (row-major), edge tiles cut short."""
        height, width = self.shape[:2]
        for y in range(0, height, tile):
            band = self.region(y, min(y + tile, height), 0, width)
            for x in range(0, width, tile):
                yield band[:, x : x + tile]


def write_mosaic(
    path,
    height: int,
    width: int,
    *,
    tile: int = 512,
    compression: str = "zlib",
    seed: int = 0,
    photos: list[np.ndarray] | None = None,
) -> Path:
    """Write a ``height`` x ``width`` RGB mosaic of ``photos`` as a tiled (Big)TIFF."""
    import tifffile

    mosaic = Mosaic(height, width, photos=photos, seed=seed)
    tifffile.imwrite(
        path,
        mosaic.tiles(tile),
        shape=mosaic.shape,
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        compression=compression,
        bigtiff=True,
        metadata=None,
    )
    return Path(path)
