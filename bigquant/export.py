"""Decompress: write the quantized image ``codebook[labels]`` of a store as a TIFF or Zarr array.

Works band by band (one row of TIFF tiles at a time), so memory holds one band
of the image, never all of it.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile

import numpy as np

from . import location
from .errors import BigquantError
from .progress import compute, progress
from .store import Store, atomic_output, open_store

log = logging.getLogger("bigquant")

TIFF_TILE = 512
#: Past this many bytes of pixels, write BigTIFF (classic TIFF stops at 4 GiB).
_BIGTIFF_BYTES = 2**32 - 2**25
#: Largest band of decoded pixels held at once.
_BAND_BYTES = 256 * 2**20


def decompress(store, out, *, overwrite: bool = False, show_progress: bool = False) -> str:
    """Write the quantized image of ``store`` to ``out``.

    Parameters
    ----------
    store : path-like, URL or Store
    out : path-like or URL
        ``*.tif`` / ``*.tiff``: a tiled, zlib-compressed TIFF (BigTIFF when
        large; photometric RGB for 3 channels, minisblack otherwise).
        ``*.zarr``: a Zarr array chunked like the labels.
    overwrite : bool
        Replace an existing ``out`` once the new file is complete.

    Reads every label once; greyscale images come out 2-D.
    """
    if not isinstance(store, Store):
        store = open_store(store)
    out = location.normalize(out)
    suffix = posixpath.splitext(location.name(out))[1].lower()
    if suffix not in (".tif", ".tiff", ".zarr"):
        raise BigquantError(f"{out}: output must end in .tif, .tiff or .zarr")
    if out == store.path:
        raise BigquantError(f"{out}: the output would replace its own store")
    image = store.quantized()
    if image.shape[2] == 1:
        image = image[:, :, 0]
    with atomic_output(out, overwrite=overwrite) as tmp, progress("writing", show_progress):
        if suffix == ".zarr":
            _write_zarr(image, tmp)
        elif location.is_url(tmp):
            # TIFF writing seeks back to patch offsets, which object-store files cannot:
            # write it locally, then upload.
            with tempfile.TemporaryDirectory() as local:
                _write_tiff(image, f"{local}/out.tif")
                location.upload(f"{local}/out.tif", tmp)
        else:
            _write_tiff(image, tmp)
    return out


def _write_zarr(image, path: str) -> None:
    import zarr
    from zarr.codecs import BloscCodec

    arr = zarr.create_array(
        location.zarr_store(path, read_only=False),
        shape=image.shape,
        chunks=tuple(c[0] for c in image.chunks),
        dtype=image.dtype,
        compressors=BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
    )
    compute(image.store(arr, lock=False, compute=False))


def _write_tiff(image, path: str) -> None:
    import tifffile

    height, width = image.shape[:2]
    tile = TIFF_TILE
    photometric = "rgb" if image.ndim == 3 and image.shape[2] == 3 else "minisblack"
    # Bands of whole label chunks decode each label chunk once; fall back to one row of
    # tiles when a chunk band would be large or does not split into whole tiles.
    band_rows = image.chunks[0][0]
    row_bytes = image.dtype.itemsize * int(np.prod(image.shape[1:]))
    if band_rows % tile or band_rows * row_bytes > _BAND_BYTES:
        band_rows = tile

    def tiles():
        for y0 in range(0, height, band_rows):
            (band,) = compute(image[y0 : y0 + band_rows])
            for ty in range(0, band.shape[0], tile):
                for x in range(0, width, tile):
                    yield np.ascontiguousarray(band[ty : ty + tile, x : x + tile])

    nbytes = image.dtype.itemsize * int(np.prod(image.shape))
    tifffile.imwrite(
        path,
        tiles(),
        shape=image.shape,
        dtype=image.dtype,
        tile=(tile, tile),
        photometric=photometric,
        compression="zlib",
        compressionargs={"level": 6},
        predictor=True,
        bigtiff=nbytes > _BIGTIFF_BYTES,
        planarconfig="contig" if image.ndim == 3 else None,
        metadata=None,
    )
