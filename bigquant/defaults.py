"""Every parameter default and choice, in one place.

The library's signatures and the CLI's options both read these, so the two
cannot drift apart. This module imports nothing: the CLI reads it to build
``--help`` without loading dask.
"""

from __future__ import annotations

#: Codebook size K.
COLORS = 256
#: Largest K: labels are uint16.
MAX_COLORS = 65536
#: Sampled pixels: past this, quality stops improving (README, "Sample size"), cost grows.
SAMPLE = 250_000
#: The same seed gives the same codebook and labels.
SEED = 0
#: dask-ml iterations after the subsample init; more than 10 gains under 0.03 dB on photos.
MAX_ITER = 10
#: Target chunk side in pixels (2048² RGB uint8 is 12 MiB).
CHUNK = 2048
#: Colour spaces the codebook is fitted and pixels assigned in (`bigquant.kernels.color`).
SPACES = ("rgb", "oklab", "lab")
#: Dithering methods (`bigquant.kernels.dither`); None is no dithering.
DITHERS = ("ordered", "floyd-steinberg")
#: Zarr formats a store can be written in; the first is the default.
ZARR_FORMATS = (3, 2)
#: Longest side of a preview, in pixels.
PREVIEW_SIZE = 2048
#: Orders of the palette swatches; the first is the default.
PALETTE_SORTS = ("lightness", "count")
#: Most memory one decoded TIFF tile or strip may take (damaged headers claim absurd sizes).
SEGMENT_BYTES = 1 << 30
#: Most memory one chunk of an image may take: images of many channels get smaller chunks.
CHUNK_BYTES = 256 << 20
#: Most memory the tiles a TIFF's sample decoded may keep for its label pass (the 256
#: sample blocks of an 8-bit RGB image are 192 MiB) ...
KEPT_TILE_BYTES = 256 << 20
#: ... where the sample's blocks are at least this share of the image (up to 1024 blocks
#: of 512², 268 megapixels): past it they save the label pass too little decoding for that.
KEPT_TILE_SHARE = 0.25
#: Tile layouts of `bigquant tiles`; the first is the default.
TILE_LAYOUTS = ("deepzoom", "xyz")
#: Deep Zoom tile side and overlap: libvips dzsave's defaults.
TILE_SIZE = 254
TILE_OVERLAP = 1
#: XYZ tiles: the side map viewers expect.
XYZ_TILE_SIZE = 256
