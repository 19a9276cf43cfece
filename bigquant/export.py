"""Decompress: write the quantized image ``codebook[labels]`` of a store as a TIFF or Zarr array.

Works band by band (one row of TIFF tiles at a time), so memory holds one band
of the image, never all of it.
"""

from __future__ import annotations

import functools
import json
import logging
import posixpath
import tempfile

import numpy as np
from dask.system import CPU_COUNT

from . import location
from .errors import BigquantError, ParameterError
from .kernels.color import in_dtype
from .kernels.downsample import block_means
from .kernels.nearest import check_labels
from .output import Output
from .progress import compute, progress
from .store import CENTIMETRES, Store, StoreMeta, open_store

log = logging.getLogger("bigquant")

TIFF_TILE = 512
#: Past this many bytes of pixels, write BigTIFF (classic TIFF stops at 4 GiB).
_BIGTIFF_BYTES = 2**32 - 2**25
#: Largest band of decoded pixels held at once.
_BAND_BYTES = 256 * 2**20


def decompress(
    store,
    out,
    *,
    palette: bool = False,
    overviews: bool = True,
    overwrite: bool = False,
    show_progress: bool = False,
) -> str:
    """Write the quantized image of ``store`` to ``out``.

    Parameters
    ----------
    store : path-like, URL or Store
        The store, or its path (opened with `open_store`).
    out : path-like or URL
        ``*.tif`` / ``*.tiff``: a tiled, zlib-compressed TIFF (BigTIFF when
        large) written as the source was shown: photometric RGB or minisblack,
        its ExtraSamples, Orientation, GeoTIFF tags and nodata (GDAL_NODATA).
        ``*.zarr``: a Zarr array chunked like the labels, its fill value the
        source's nodata.
    palette : bool
        Write an indexed-colour TIFF instead: the labels as pixels (8-bit for
        up to 256 colours, else 16-bit) with the codebook as its colour map.
        Usually the smallest file to share; needs a grey or RGB codebook of
        uint8 or uint16 values and no alpha; the nodata label is its GDAL_NODATA.
    overviews : bool
        Give a TIFF internal overviews (see `overview_levels`), so GIS tools
        draw it zoomed out without reading every tile. Measured on the 105 MP
        benchmark mosaic: 1.3x the time of a palette TIFF without them and
        1.9x for an RGB one (whose averaged levels also compress less).
    overwrite : bool
        Replace an existing ``out`` once the new file is complete.
    show_progress : bool
        A progress bar on stderr.

    Returns
    -------
    str
        ``out`` as an absolute path (URLs unchanged).

    Raises
    ------
    ParameterError
        ``palette`` with a ``.zarr`` output, or ``out`` exists and not
        ``overwrite`` (or, even with it, is not a TIFF file or Zarr array).
    BigquantError
        ``out`` not ending in ``.tif``, ``.tiff`` or ``.zarr``, the store
        itself, in a missing directory, or being written by another run; a
        store `open_store` refuses; a ``palette`` the codebook cannot make
        (alpha, channels other than grey or RGB, values other than uint8 or
        uint16); a label past the codebook found while reading.
    ClusterError
        Worker processes died while reading (on a cluster).

    Notes
    -----
    Reads every label once, and once more per overview level, a band of
    chunks at a time: memory holds one band of the image, never all of it.
    Greyscale images come out 2-D. The output is written beside ``out`` and
    moved into place once complete.

    Examples
    --------
    >>> import bigquant
    >>> bigquant.decompress("scan.zarr", "scan-256.tif")  # doctest: +SKIP
    '/data/scan-256.tif'
    >>> bigquant.decompress("scan.zarr", "scan-indexed.tif", palette=True)  # doctest: +SKIP
    '/data/scan-indexed.tif'
    """
    if not isinstance(store, Store):
        store = open_store(store)
    out = location.normalize(out)
    suffix = posixpath.splitext(location.name(out))[1].lower()
    if suffix not in (".tif", ".tiff", ".zarr"):
        raise BigquantError(f"{out}: output must end in .tif, .tiff or .zarr")
    if out == store.path:
        raise BigquantError(f"{out}: the output would replace its own store")
    colormap = description = None
    if palette:
        if suffix == ".zarr":
            raise ParameterError(f"{out}: `palette` writes a TIFF; name the output .tif")
        colormap = palette_colormap(store)
        description = palette_description(store)
        # Checked like the colours would be: no label may point past the codebook.
        image = store.labels_dask().map_blocks(check_labels, len(store.codebook))
    else:
        image = store.quantized()
        if image.shape[2] == 1:
            image = image[:, :, 0]
    levels = overview_levels(store, palette) if overviews and suffix != ".zarr" else []
    with (
        Output(out, "zarr" if suffix == ".zarr" else "tiff").write(overwrite=overwrite) as tmp,
        progress("writing", show_progress),
    ):
        if suffix == ".zarr":
            _write_zarr(image, tmp, None if palette else store.meta.source.nodata_value)
        elif location.is_url(tmp):
            # TIFF writing seeks back to patch offsets, which object-store files cannot:
            # write it locally, then upload.
            with tempfile.TemporaryDirectory() as local:
                _write_tiff(image, f"{local}/out.tif", colormap, store.meta, levels, description)
                location.upload(f"{local}/out.tif", tmp)
        else:
            _write_tiff(image, tmp, colormap, store.meta, levels, description)
    return out


def overview_levels(store: Store, palette: bool) -> list:
    """Reduced-resolution levels of the image, each halving the one before until one fits a tile.

    Lazy dask arrays, each computed from the labels (read once more per level)
    by the rule `bigquant.kernels.downsample` gives for this output: the labels
    of every 2^n-th pixel for a palette TIFF, the mean colour of each
    2^n x 2^n block otherwise.
    """
    labels, codebook, nodata = store.labels_dask(), store.codebook, store.meta.nodata_label
    convert = functools.partial(in_dtype, dtype=codebook.dtype)
    levels, f = [], 1
    # The labels were checked against the codebook when the full image was written.
    while max(-(-n // f) for n in labels.shape) > TIFF_TILE:  # the last level exceeds a tile
        f *= 2
        if palette:
            levels.append(labels[::f, ::f])
        else:
            level = block_means(labels, codebook, f, codebook.dtype, convert, skip=nodata)
            levels.append(level[:, :, 0] if level.shape[2] == 1 else level)
    return levels


def palette_colormap(store: Store) -> np.ndarray:
    """The codebook as a TIFF colour map: ``(3, 2**bits)`` uint16.

    Entries past the codebook repeat its last colour (not the nodata row): a
    reader that takes every entry of the map, duplicates dropped, finds the
    store's colours and no other (black padding would add one).
    """
    codebook, source = store.codebook, store.meta.source
    if any(code in (1, 2) for code in source.extrasamples):
        raise BigquantError(
            f"{store.path}: a palette TIFF cannot carry the image's alpha (TIFF colour maps "
            "have none); write an RGB TIFF to keep it"
        )
    if codebook.shape[1] == 1:  # grey: entries with R = G = B
        codebook = np.repeat(codebook, 3, axis=1)
    if codebook.shape[1] != 3 or codebook.dtype not in (np.uint8, np.uint16):
        raise BigquantError(
            f"{store.path}: a palette TIFF needs a grey or RGB codebook of uint8 or uint16 values, "
            f"not {codebook.shape[1]} channel(s) of {codebook.dtype}"
        )
    # TIFF colour maps are 16-bit: values scale from the source's range (8-bit v becomes
    # v * 257, 255 -> 65535; 12-bit values scale by 65535 / 4095).
    entries = np.rint(codebook.T * (65535 / source.peak)).astype(np.uint16)
    colormap = np.empty((3, 1 << (8 * store.labels.dtype.itemsize)), np.uint16)
    colormap[:, : len(codebook)] = entries
    # (A damaged store's codebook may be shorter than n_colors: its labels are refused later.)
    last = min(store.meta.n_colors, len(codebook)) - 1
    colormap[:, len(codebook) :] = entries[:, last : last + 1]
    return colormap


def palette_description(store: Store) -> str:
    """What a palette TIFF's ImageDescription records of its store, as JSON, so that
    `bigquant.palettes.load_codebook` reads back exactly the codebook: its ``colors`` (the
    first entries of the map; the nodata label and the padding follow them), and the
    ``dtype``, ``peak`` and ``channels`` its 16-bit entries were scaled from."""
    source = store.meta.source
    codebook = {
        "colors": store.meta.n_colors,
        "dtype": str(store.codebook.dtype),
        "peak": source.peak,
        "channels": int(store.codebook.shape[1]),
    }
    return json.dumps({"bigquant": {"codebook": codebook}})


def _write_zarr(image, path: str, nodata: float | None) -> None:
    import zarr
    from zarr.codecs import BloscCodec

    arr = zarr.create_array(
        location.zarr_store(path, read_only=False),
        shape=image.shape,
        chunks=tuple(c[0] for c in image.chunks),
        dtype=image.dtype,
        compressors=BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
        # The source's nodata, which GDAL reports as NoData; else none.
        fill_value=nodata,
    )
    compute(image.store(arr, lock=False, compute=False))


def _write_tiff(
    image,
    path: str,
    colormap: np.ndarray | None = None,
    meta: StoreMeta | None = None,
    levels: list | None = None,
    description: str | None = None,
) -> None:
    """A tiled TIFF of ``image`` and its overview ``levels`` (reduced-resolution pages, which
    GDAL and QGIS draw zoomed-out views from), written as its source was (`_source_tags`),
    with ``description`` as the first page's ImageDescription."""
    import tifffile

    source = meta.source if meta else None
    if colormap is not None:
        photometric = "palette"
    elif source is not None and source.photometric in ("rgb", "minisblack"):
        photometric = source.photometric
    else:
        photometric = "rgb" if image.ndim == 3 and image.shape[2] == 3 else "minisblack"
    pixel_values = image.shape[2] if image.ndim == 3 else 1
    options = {
        "tile": (TIFF_TILE, TIFF_TILE),
        "photometric": photometric,
        "colormap": colormap,
        "compression": "zlib",
        # libdeflate's level 4, not zlib's usual 6: on the benchmark mosaic's 256 colours,
        # 150 against 95 MB/s a core for 1.9 % more bytes (overviews: 101 against 74 MB/s,
        # 0.8 % more).
        "compressionargs": {"level": 4},
        # Differences of palette indices say nothing: predict only colour values.
        "predictor": colormap is None,
        "planarconfig": "contig" if image.ndim == 3 else None,
        "extrasamples": (source.extrasamples or None) if source and colormap is None else None,
        "metadata": None,
        # Every core: dask's threads wait while a band of tiles is compressed (tifffile's
        # own default is half the cores). Eight tiles a thread at a time: tifffile's default
        # of 256 MiB added 130-160 MB to decompress's peak at 100 MP, for no speed.
        "maxworkers": CPU_COUNT,
        "buffersize": 8 * CPU_COUNT * TIFF_TILE**2 * image.dtype.itemsize * pixel_values,
    }
    nbytes = image.dtype.itemsize * int(np.prod(image.shape))
    with tifffile.TiffWriter(path, bigtiff=nbytes > _BIGTIFF_BYTES) as tif:
        tif.write(
            _tiles(image),
            shape=image.shape,
            dtype=image.dtype,
            extratags=_source_tags(meta, palette=colormap is not None),
            description=description,
            **_resolution(source and source.pixel_size),
            **options | {"predictor": options["predictor"] and _predicts(meta)},
        )
        for level in levels or ():
            tif.write(_tiles(level), shape=level.shape, dtype=level.dtype, subfiletype=1, **options)


def _predicts(meta: StoreMeta | None) -> bool:
    """Whether horizontal differencing makes the full-resolution colours compress better.

    An image of few colours repeats the same few byte patterns, which zlib
    finds as they are and differencing scatters. On a 4096² crop of the
    benchmark mosaic, zlib level 6 with and without the predictor: 3.1 and 2.6 MB
    at 16 colours, 11.0 and 7.3 at 256 (12.0 and 8.0 dithered), 22.3 and 17.1 at
    4096, 24.9 and 23.2 at 16 384, but 25.4 and 28.2 at 65 536. Overview levels,
    means of blocks, take it whatever the colours (1.72 and 1.87 MB for the
    second level at 256).
    """
    return meta is None or meta.n_colors > 16_384


def _source_tags(meta: StoreMeta | None, palette: bool) -> list[tuple]:
    """tifffile ``extratags`` that say what the source's TIFF said: its GeoTIFF tags as they
    were, its Orientation, and its nodata as GDAL_NODATA (the reserved label in a palette TIFF)."""
    if meta is None:
        return []
    source = meta.source
    tags = [
        (int(code), tag["type"], tag["count"], tag["value"], True)
        for code, tag in (source.geotiff or {}).items()
    ]
    if source.orientation != 1:
        tags.append((274, "H", 1, source.orientation, True))
    if meta.nodata_label is not None:
        value = meta.nodata_label if palette else source.nodata
        tags.append((42113, "s", 0, str(value), True))
    return tags


def _tiles(image):
    """The TIFF tiles of a dask array in file order, computed a band of rows at a time."""
    height, width = image.shape[:2]
    tile = TIFF_TILE
    # Bands of whole chunks decode each chunk once; fall back to one row of tiles when a
    # chunk band would be large or does not split into whole tiles.
    band_rows = image.chunks[0][0]
    row_bytes = image.dtype.itemsize * int(np.prod(image.shape[1:]))
    if band_rows % tile or band_rows * row_bytes > _BAND_BYTES:
        band_rows = tile
    for y0 in range(0, height, band_rows):
        (band,) = compute(image[y0 : y0 + band_rows])
        for ty in range(0, band.shape[0], tile):
            for x in range(0, width, tile):
                yield np.ascontiguousarray(band[ty : ty + tile, x : x + tile])


def _resolution(pixel_size: dict | None) -> dict:
    """tifffile's ``resolution`` arguments for a physical pixel size: pixels per centimetre."""
    if not pixel_size:
        return {}
    cm = CENTIMETRES[pixel_size["unit"]]
    return {
        "resolution": (1 / (pixel_size["x"] * cm), 1 / (pixel_size["y"] * cm)),
        "resolutionunit": "CENTIMETER",
    }
