"""Decompress: write the quantized image ``codebook[labels]`` of a store as a TIFF or Zarr array.

Works band by band (one row of TIFF tiles at a time), so memory holds one band
of the image, never all of it.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import posixpath
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from dask.system import CPU_COUNT

from . import location
from .errors import BigquantError, ParameterError
from .kernels.downsample import pyramid_rows, weighted_codebook
from .kernels.nearest import check_labels, lookup_into_tiles
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
        Give a TIFF internal overviews (see `overview_shapes`), so GIS tools
        draw it zoomed out without reading every tile. Measured on the 105 MP
        benchmark mosaic: about the time of a palette TIFF without them and
        1.5x for an RGB one (whose averaged levels also compress less).
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
    Reads every label once, a band of chunks at a time, and makes every page
    of a TIFF in that one pass (each overview level from the one below):
    memory holds one band of labels and a row of tiles per page, never the
    image. A TIFF's overview tiles, compressed, wait in an anonymous
    temporary file beside ``out`` until the full page is written. Greyscale
    images come out 2-D. The output is written beside ``out`` and moved into
    place once complete.

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
    with (
        Output(out, "zarr" if suffix == ".zarr" else "tiff").write(overwrite=overwrite) as tmp,
        progress("writing", show_progress),
    ):
        if suffix == ".zarr":
            image = store.quantized()
            image = image[:, :, 0] if image.shape[2] == 1 else image
            _write_zarr(image, tmp, store.meta.source.nodata_value)
        elif location.is_url(tmp):
            # TIFF writing seeks back to patch offsets, which object-store files cannot:
            # write it locally, then upload.
            with tempfile.TemporaryDirectory() as local:
                _write_tiff(store, f"{local}/out.tif", colormap, overviews, description)
                location.upload(f"{local}/out.tif", tmp)
        else:
            _write_tiff(store, tmp, colormap, overviews, description)
    return out


def overview_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """The ``(rows, columns)`` of a TIFF's overview levels for an image of ``shape``.

    Each level halves the one before (an odd side rounded up) until one fits
    a tile. Level n shows the image shrunk 2ⁿ times by the rule
    `bigquant.kernels.downsample` gives for the output: the labels of every
    2ⁿ-th pixel for a palette TIFF, the mean colour of each 2ⁿ × 2ⁿ block
    otherwise.
    """
    shapes = []
    while max(shape) > TIFF_TILE:  # the last level exceeds a tile
        shape = (-(-shape[0] // 2), -(-shape[1] // 2))
        shapes.append(shape)
    return shapes


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
    store: Store,
    path: str,
    colormap: np.ndarray | None = None,
    overviews: bool = True,
    description: str | None = None,
) -> None:
    """A tiled TIFF of ``store``'s image (its labels with ``colormap``, else its colours)
    and its overviews (reduced-resolution pages, which GDAL and QGIS draw zoomed-out views
    from), written as its source was (`_source_tags`), with ``description`` as the first
    page's ImageDescription.

    One pass over the labels makes every page (`_Pages`): the full page goes straight
    to the file, the overviews' compressed tiles to a temporary file beside it until
    their turn comes (TIFF pages follow each other): at 100 MP, 54 MB beside the RGB full
    page's 51 (averaged colours compress less), 17 MB beside a palette one's 38.
    """
    import tifffile

    meta = store.meta
    source = meta.source
    codebook = store.codebook
    palette = colormap is not None
    if palette:
        photometric = "palette"
    elif source.photometric in ("rgb", "minisblack"):
        photometric = source.photometric
    else:
        photometric = "rgb" if codebook.shape[1] == 3 else "minisblack"
    dtype = store.labels.dtype if palette else codebook.dtype
    channels = () if palette or codebook.shape[1] == 1 else (codebook.shape[1],)
    options = {
        "tile": (TIFF_TILE, TIFF_TILE),
        "photometric": photometric,
        "colormap": colormap,
        # Tiles come compressed (`_encoder`): libdeflate's zlib streams, as tifffile makes them.
        "compression": "zlib",
        "planarconfig": "contig" if channels else None,
        "extrasamples": (source.extrasamples or None) if not palette else None,
        "metadata": None,
    }
    # Differences of palette indices say nothing: predict only colour values.
    predicts = [not palette and _predicts(meta), not palette]
    shape = store.labels.shape
    shapes = [shape, *(overview_shapes(shape) if overviews else [])]
    nbytes = dtype.itemsize * int(np.prod(shape)) * (channels or (1,))[0]
    with (
        tifffile.TiffWriter(path, bigtiff=nbytes > _BIGTIFF_BYTES) as tif,
        tempfile.TemporaryFile(dir=posixpath.dirname(path) or None) as spill,
        ThreadPoolExecutor(CPU_COUNT) as pool,
    ):
        pages = _Pages(store, palette, len(shapes), pool, spill, predicts)
        tif.write(
            pages.full(),
            shape=shape + channels,
            dtype=dtype,
            predictor=predicts[0],
            extratags=_source_tags(meta, palette=palette),
            description=description,
            **_resolution(source.pixel_size),
            **options,
        )
        pages.finish()
        for level, level_shape in enumerate(shapes[1:], 1):
            tif.write(
                pages.overview(level),
                shape=level_shape + channels,
                dtype=dtype,
                subfiletype=1,
                predictor=predicts[1],
                **options,
            )


class _Pages:
    """Every page of a TIFF from one pass over a store's labels, as compressed tiles.

    The labels are read a band at a time and added a row of tiles at a time
    to each page's row of tiles in file order (no tile cut out of a band): the
    full page's by `bigquant.kernels.nearest.lookup_into_tiles`, the
    overviews' all at once by `bigquant.kernels.downsample.pyramid_rows`,
    which keeps a row of sums per level (each level from the one below, the
    same means as from the labels). A full row of tiles is compressed on
    ``pool``. The full page's tiles are yielded by `full` in file order; the
    overviews' go to ``spill`` as they are done, to be read back by `overview`.
    """

    def __init__(self, store: Store, palette: bool, n_pages: int, pool, spill, predicts):
        self.labels = store.labels_dask()
        self.codebook = codebook = store.codebook
        self.spill = spill
        width = self.labels.shape[1]
        self.pyramid = {}
        if palette:  # indices as they are
            dtype = self.labels.dtype
            self.colors = np.arange(len(codebook), dtype=dtype)[:, None]
        else:
            dtype, self.colors = codebook.dtype, codebook
            # Colour sums and a last column counting pixels with data, which nodata has not.
            skip = store.meta.nodata_label
            self.pyramid = {
                "weighted": weighted_codebook(codebook, skip),
                # A block of nothing but nodata takes the nodata colour.
                "fill": codebook[skip] if skip is not None else np.zeros(codebook.shape[1]),
                "dtype": dtype,
                "sums": [
                    np.zeros((-(-width // 2**n), codebook.shape[1] + 1)) for n in range(1, n_pages)
                ],
            }
        encoders = [_encoder(dtype, predicts[0], False), _encoder(dtype, predicts[1], True)]
        self.pages = [
            _Page(
                -(-width // 2**n),
                self.colors.shape[1],
                dtype,
                functools.partial(pool.submit, encoders[min(n, 1)]),
            )
            for n in range(n_pages)
        ]
        self.filled = np.zeros(n_pages, np.int64)  # rows of each page's row of tiles

    def full(self):
        """The full page's compressed tiles in file order, while the overviews are made."""
        labels, tile = self.labels, TIFF_TILE
        height, width = labels.shape
        # Bands of whole chunks decode each chunk once; fall back to one row of tiles when a
        # chunk band would be large or does not split into whole tiles.
        band_rows = labels.chunks[0][0]
        if band_rows % tile or band_rows * width * labels.dtype.itemsize > _BAND_BYTES:
            band_rows = tile
        done = self.pages[0].done
        for y0 in range(0, height, band_rows):
            (band,) = compute(labels[y0 : y0 + band_rows])
            check_labels(band, len(self.codebook))
            for y in range(0, len(band), tile):
                self._add(band[y : y + tile], y0 + y)
                self._spill(wait=False)
                # One row of tiles compresses while the one before is written.
                while len(done) > self.pages[0].columns:
                    yield done.popleft().result()
        while done:
            yield done.popleft().result()

    def finish(self) -> None:
        """Wait for the overviews' last tiles (after `full`) and put them in ``spill``."""
        self._spill(wait=True)

    def overview(self, level: int):
        """The compressed tiles of overview ``level`` (from 1), read back from ``spill``."""
        for offset, size in self.pages[level].spilled:
            self.spill.seek(offset)
            yield self.spill.read(size)

    def _add(self, rows: np.ndarray, top: int) -> None:
        """Add a row of tiles' labels, from row ``top``, to every page; compress full rows."""
        height = self.labels.shape[0]
        lookup_into_tiles(rows, self.colors, self.pages[0].tiles, int(self.filled[0]))
        self.filled[0] += len(rows)
        tiles = [page.tiles for page in self.pages[1:]]
        pyramid_rows(rows, top, height, tiles, self.filled[1:], **self.pyramid)
        last = top + len(rows) == height
        for n, page in enumerate(self.pages):
            if self.filled[n] == TIFF_TILE or (last and self.filled[n]):
                page.compress()
                self.filled[n] = 0

    def _spill(self, wait: bool) -> None:
        """Append the overviews' compressed tiles that are done, in file order, to ``spill``."""
        for page in self.pages[1:]:
            while page.done and (wait or page.done[0].done()):
                data = page.done.popleft().result()
                page.spilled.append((self.spill.tell(), len(data)))
                self.spill.write(data)


class _Page:
    """One page in the making: its row of tiles being filled, and its tiles compressing."""

    def __init__(self, width: int, channels: int, dtype, encode):
        self.columns = -(-width // TIFF_TILE)
        self.shape = (self.columns, TIFF_TILE, TIFF_TILE, channels)
        self.dtype = dtype
        self.encode = encode  # ``encode(tile)``: a future of the tile's compressed bytes
        self.tiles = np.zeros(self.shape, dtype)  # zeros pad the edge tiles, as tifffile does
        self.done = collections.deque()  # futures of compressed tiles, in file order
        self.spilled = []  # (offset, size) of each compressed tile in the spill file

    def compress(self) -> None:
        """Compress the row of tiles, and start a new one."""
        self.done.extend(self.encode(tile) for tile in self.tiles)
        self.tiles = np.zeros(self.shape, self.dtype)


def _encoder(dtype, predictor: bool, overview: bool):
    """What tifffile does to a tile it compresses: the predictor tifffile takes for
    ``dtype`` (horizontal differencing, or floating point for floats), then libdeflate,
    at `_LEVELS`' level for the full page or an ``overview``."""
    from tifffile import TIFF

    predict = TIFF.PREDICTORS[3 if np.dtype(dtype).kind == "f" else 2] if predictor else None
    deflate, level = TIFF.COMPRESSORS[8], _LEVELS[overview]

    def encode(tile: np.ndarray) -> bytes:
        return deflate(predict(tile, axis=-2) if predict else tile, level=level)

    return encode


#: libdeflate's levels for the full page and the overviews. Compressing is most of
#: decompress' work. On 120 tiles of each page of the 100 MP benchmark mosaic (K = 256),
#: a core, against level 4: the RGB full page 305 against 229 MB/s for 3.6 % more bytes
#: (the palette one 163 against 140 MB/s, 1.3 % more), the RGB overviews at level 1 160
#: against 117 MB/s for 0.3 % more (averaged colours: level 1 finds as much as 4).
_LEVELS = {False: 2, True: 1}


def _predicts(meta: StoreMeta) -> bool:
    """Whether horizontal differencing makes the full-resolution colours compress better.

    An image of few colours repeats the same few byte patterns, which zlib
    finds as they are and differencing scatters. On a 4096² crop of the
    benchmark mosaic, zlib level 6 with and without the predictor: 3.1 and 2.6 MB
    at 16 colours, 11.0 and 7.3 at 256 (12.0 and 8.0 dithered), 22.3 and 17.1 at
    4096, 24.9 and 23.2 at 16 384, but 25.4 and 28.2 at 65 536. Overview levels,
    means of blocks, take it whatever the colours (1.72 and 1.87 MB for the
    second level at 256).
    """
    return meta.n_colors > 16_384


def _source_tags(meta: StoreMeta, palette: bool) -> list[tuple]:
    """tifffile ``extratags`` that say what the source's TIFF said: its GeoTIFF tags as they
    were, its Orientation, and its nodata as GDAL_NODATA (the reserved label in a palette TIFF)."""
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


def _resolution(pixel_size: dict | None) -> dict:
    """tifffile's ``resolution`` arguments for a physical pixel size: pixels per centimetre."""
    if not pixel_size:
        return {}
    cm = CENTIMETRES[pixel_size["unit"]]
    return {
        "resolution": (1 / (pixel_size["x"] * cm), 1 / (pixel_size["y"] * cm)),
        "resolutionunit": "CENTIMETER",
    }
