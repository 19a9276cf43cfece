"""TIFF decoding: a picklable array over a TIFF's tiles or strips, opened by path in each task.

Each dask chunk is a task that opens the file by path on whichever thread or
process runs it (tifffile's zarr store cannot be pickled, so it is never
shipped), and decodes only the tiles or strips under that chunk. Chunks are
whole multiples of the file's tiles or strips, so no tile is ever decoded twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import operator
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from dask.base import tokenize

from .. import defaults, location
from ..errors import BigquantError
from ..kernels import convert
from .image import Image, as_image, chunk_side
from .metadata import gdal_nodata, geotiff_tags, ome_pixel_size, tag_value
from .photometric import COLOUR_SAMPLES, Decoding, extrasamples_of, stored_photometric, white_point

# dask.array only inside the functions that build graphs: worker processes running this
# module's chunk tasks never import it (see bigquant.cluster._WORKER_MODULES).
if TYPE_CHECKING:
    import dask.array as da

log = logging.getLogger("bigquant")

#: The first four bytes of a TIFF or BigTIFF file.
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")

#: TIFF tag read here: Orientation.
_ORIENTATION = 274


@dataclass(frozen=True)
class TiffPlanes:
    """The plane of a TIFF bigquant reads: the first page of series 0, level 0."""

    shape: tuple[int, int, int]
    dtype: np.dtype


#: TIFF files open in this process, keyed by path and modification stamp.
HANDLES = location.HandleCache(size=16)


class DecodedTiles:
    """Tiles or strips decoded in this process, kept for one later read to take.

    A file's sample decodes many of its tiles and its label pass decodes every
    tile again: the 256 sample blocks of a 100-megapixel image are 64 % of it.
    While `keeping` a file, the tiles its reads decode are kept (up to a byte
    budget, until told to stop), and a read that needs one takes it instead
    of decoding it; what is left is dropped at the end of the block. Keyed by
    path, modification stamp and tile index, so a changed file is decoded afresh.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # path -> bytes its reads may still keep; a path not here has no tiles kept.
        self._room: dict[str, int] = {}
        # (path, stamp, index) -> what the page's decode() returned
        self._tiles: dict[tuple, tuple] = {}

    @contextlib.contextmanager
    def keeping(self, path: str, budget: int) -> Iterator[Callable[[], None]]:
        """Keep the tiles that reads of ``path`` decode, up to ``budget`` bytes, until the
        function this yields is called; reads within the block take them. Tiles left
        at its end are dropped. Where ``path`` is kept already (another run on the same
        file), keep nothing more: its reads take what the first block keeps."""
        with self._lock:
            first = path not in self._room
            if first:
                self._room[path] = budget
        if not first:
            yield lambda: None
            return
        try:
            yield functools.partial(self._stop, path)
        finally:
            with self._lock:
                del self._room[path]
                for key in [key for key in self._tiles if key[0] == path]:
                    del self._tiles[key]

    def __len__(self) -> int:
        """Tiles kept now."""
        return len(self._tiles)

    def _stop(self, path: str) -> None:
        with self._lock:
            if path in self._room:  # not after the block
                self._room[path] = 0

    def take(self, path: str, stamp: str, indices: list[int]) -> dict[int, tuple]:
        if path not in self._room:  # unlocked: the common case, nothing kept for this file
            return {}
        with self._lock:
            found = ((i, self._tiles.pop((path, stamp, i), None)) for i in indices)
            return {i: decoded for i, decoded in found if decoded is not None}

    def offer(self, path: str, stamp: str, index: int, decoded: tuple) -> None:
        if not self._room.get(path) or decoded[0] is None:
            return
        with self._lock:
            room = self._room.get(path, 0)
            if room >= decoded[0].nbytes:
                self._room[path] = room - decoded[0].nbytes
                self._tiles[path, stamp, index] = decoded


#: Tiles a file's sample decoded, kept for its label pass (see `DecodedTiles`).
DECODED = DecodedTiles()


class TiffSource:
    """Picklable ``(rows, columns, channels)`` array-like over TIFF tiles, for ``da.from_array``.

    Only the path travels with the task graph: each process opens the file on
    first use and keeps the handle in a bounded cache (`HandleCache`), keyed by
    path and modification time.
    A read decodes exactly the tiles or strips under the requested window, on
    the calling thread, so dask's threads decode in parallel (tifffile's Zarr
    store would funnel every decode through zarr's single event-loop thread).
    """

    def __init__(self, path: str, planes: TiffPlanes, stamp: str, decoding: Decoding | None):
        self.path = path
        self.planes = planes
        self.decoding = decoding
        self.shape = planes.shape if decoding is None else decoding.shape(planes.shape)
        self.dtype = planes.dtype if decoding is None else decoding.dtype(planes.dtype)
        self.ndim = 3
        self.stamp = stamp

    def _open(self) -> tuple[object, Callable[[], None]]:
        import tifffile

        stack = contextlib.ExitStack()
        # Both: TiffFile.close() leaves a file object it was given open.
        fh = stack.enter_context(location.open_input(self.path))
        tif = stack.enter_context(tifffile.TiffFile(fh))
        tif.filehandle.set_lock(True)  # threads share the handle: serialize seek+read
        return tif, stack.close

    def __getitem__(self, index) -> np.ndarray:
        (y0, y1, _), (x0, x1, _) = (
            s.indices(n) for s, n in zip(index[:2], self.shape[:2], strict=True)
        )
        try:
            with HANDLES.borrow((self.path, self.stamp), self._open) as tif:
                level = tif.series[0].levels[0]
                pixels = _read_window(
                    level.pages[0], level.keyframe, y0, y1, x0, x1, (self.path, self.stamp)
                )
        except Exception as exc:
            raise BigquantError(
                f"{self.path}: cannot decode pixels [{y0}:{y1}, {x0}:{x1}]: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if self.decoding is not None:
            pixels = self.decoding.apply(pixels)
        return pixels[:, :, index[2]]


def _read_window(
    page, keyframe, y0: int, y1: int, x0: int, x1: int, source: tuple[str, str]
) -> np.ndarray:
    """Pixels ``[y0:y1, x0:x1]`` of one page as ``(rows, columns, samples)``; ``source``
    is the file's path and stamp, for tiles `DECODED` keeps."""
    separate, _, height, width, contig = keyframe.shaped
    if keyframe.is_tiled:
        th, tw = keyframe.tilelength, keyframe.tilewidth
    else:
        th, tw = keyframe.rowsperstrip, width
    down, across = -(-height // th), -(-width // tw)
    rows, cols = range(y0 // th, (y1 - 1) // th + 1), range(x0 // tw, (x1 - 1) // tw + 1)
    indices = [
        (plane * down + r) * across + c for plane in range(separate) for r in rows for c in cols
    ]
    # Native byte order: big-endian files are swapped as the tiles are copied in.
    out = np.zeros((separate, y1 - y0, x1 - x0, contig), keyframe.dtype.newbyteorder("="))

    def place(tile, plane, ty, tx) -> None:
        if tile is None:
            return  # an empty (sparse) tile reads as zeros
        tile = tile[0]  # drop the depth axis
        ya, yb = max(y0, ty), min(y1, ty + th, height)
        xa, xb = max(x0, tx), min(x1, tx + tw, width)
        out[plane, ya - y0 : yb - y0, xa - x0 : xb - x0] = tile[
            ya - ty : yb - ty, xa - tx : xb - tx
        ]

    kept = DECODED.take(*source, indices)
    for tile, (plane, _, ty, tx, _), _ in kept.values():
        place(tile, plane, ty, tx)
    indices = [i for i in indices if i not in kept]
    fh = page.parent.filehandle
    segments = fh.read_segments(
        [page.dataoffsets[i] for i in indices],
        [page.databytecounts[i] for i in indices],
        indices=indices,
        sort=True,
        lock=fh.lock,
    )
    for data, i in segments:
        decoded = keyframe.decode(data, i, jpegtables=keyframe.jpegtables)
        DECODED.offer(*source, i, decoded)
        tile, (plane, _, ty, tx, _), _ = decoded
        place(tile, plane, ty, tx)
    # Separate planes or contiguous samples: one of the two is 1.
    return np.moveaxis(out, 0, -1).reshape(y1 - y0, x1 - x0, separate * contig)


def tiff_planes(path: str, series) -> TiffPlanes:
    """The first plane of ``series`` (level 0): its first page, as viewers show a stack.

    A stack whose channels, z-planes or times are pages (an OME-TIFF's CZYX,
    ImageJ hyperstacks, a multi-page scan) is one picture per page to Pillow,
    libtiff and GDAL, which show the first: so does bigquant, saying so in one
    line, and every output opens wherever the source does.
    """
    level = series.levels[0]
    keyframe = level.keyframe
    leading = level.axes[: len(level.axes) - len(keyframe.axes)]  # page axes, e.g. "CZ", "I"
    if int(np.prod(level.shape[: len(leading)])) > 1:
        log.warning(
            "%s: series 0 is a stack of %s pages (axes %s); quantizing its first page, "
            "as viewers show it",
            path,
            "x".join(str(n) for n in level.shape[: len(leading)]),
            level.axes,
        )
    separate, _, height, width, contig = keyframe.shaped
    dtype = keyframe.dtype.newbyteorder("=")
    return TiffPlanes((height, width, separate * contig), dtype)


def open_tiff(path: str, chunks: int | None) -> Image:
    import tifffile

    ident = location.identity(path)
    try:
        with location.open_input(path) as fh, tifffile.TiffFile(fh) as tif:
            if not tif.series:
                raise BigquantError(f"{path}: TIFF holds no image")
            if len(tif.series) > 1:
                log.warning(
                    "%s holds %d image series; using the first (%s)",
                    path,
                    len(tif.series),
                    tif.series[0].kind,
                )
            page = tif.series[0].levels[0].keyframe
            if page.imagedepth > 1:
                raise BigquantError(f"{path}: volumetric (3-D) TIFFs are not supported")
            planes = tiff_planes(path, tif.series[0])
            stored = stored_photometric(path, page, planes.shape[2])
            decoding = Decoding.needed(
                stored,
                page.bitspersample,
                planes.dtype,
                lut=convert.colormap_lut(page.colormap) if stored == "palette" else None,
                white=white_point(page),
            )
            _check_budget(path, page, planes)
            tiled = page.is_tiled
            unit = (
                (page.tilelength, page.tilewidth) if tiled else (page.rowsperstrip, page.imagewidth)
            )
            fields = {
                "geotiff": geotiff_tags(page),
                "pixel_size": ome_pixel_size(tif.ome_metadata) if tif.is_ome else None,
                "extrasamples": extrasamples_of(
                    page, stored, planes.shape[2] - COLOUR_SAMPLES[stored]
                ),
                "orientation": int(tag_value(page, _ORIENTATION, 1)),
                "nodata": gdal_nodata(page),
                "converted": decoding and decoding.describe(),
            }
            if 8 < page.bitspersample < 16 and planes.dtype.kind == "u":
                fields["bits"] = page.bitspersample
            # Check every tile offset now so a truncated file fails before any work is done.
            _check_segments(path, ident["size"], tif.series[0].levels[0].pages[0])
    except BigquantError:
        raise
    except Exception as exc:
        raise BigquantError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None

    source = TiffSource(path, planes, f"{ident['size']}-{ident['mtime']}", decoding)
    array = functools.partial(tiff_array, source, ident, unit, tiled)
    photometric = "minisblack" if COLOUR_SAMPLES[stored] == 1 and stored != "palette" else "rgb"
    return as_image(
        array(chunks or defaults.CHUNK),
        path=path,
        photometric=photometric,
        rechunked=array,
        **fields,
    )


def palette_usage(path: str) -> np.ndarray:
    """How many pixels of a palette TIFF (series 0, first plane) use each colour-map entry.

    One pass over its indices, chunk by chunk as `open_image` reads them (the
    colour map not applied): the whole file is decoded once, memory holds a
    few chunks and one count per entry.
    """
    import tifffile

    from ..progress import compute

    ident = location.identity(path)
    with location.open_input(path) as fh, tifffile.TiffFile(fh) as tif:
        page = tif.series[0].levels[0].keyframe
        planes = tiff_planes(path, tif.series[0])
        entries = len(page.colormap[0])
        unit = (
            (page.tilelength, page.tilewidth)
            if page.is_tiled
            else (page.rowsperstrip, page.imagewidth)
        )
        tiled = page.is_tiled
    source = TiffSource(path, planes, f"{ident['size']}-{ident['mtime']}", None)
    indices = tiff_array(source, ident, unit, tiled, defaults.CHUNK)
    # One count per entry per chunk, summed as a tree: memory stays bounded for 16-bit maps.
    counts = indices.map_blocks(
        _bincount,
        entries,
        chunks=((1,) * len(indices.chunks[0]), (1,) * len(indices.chunks[1]), (entries,)),
        dtype=np.int64,
    )
    (total,) = compute(counts.sum(axis=(0, 1)))
    return total


def _bincount(block: np.ndarray, entries: int) -> np.ndarray:
    """Pixels of ``block`` (palette indices) per index as ``(1, 1, entries)`` (indices past
    the colour map, which no viewer can show, are not counted)."""
    index = block[..., 0].ravel()
    counts = np.bincount(index.view(np.uint8) if index.dtype == bool else index, minlength=entries)
    return counts[None, None, :entries]


def tiff_array(source: TiffSource, ident: dict, unit, tiled: bool, side: int) -> da.Array:
    """``source`` as a dask array in chunks of whole tiles or strips, about ``side`` a side."""
    import dask.array as da

    # Many samples per pixel make big chunks: keep one within `defaults.CHUNK_BYTES`.
    per_pixel = source.shape[2] * source.dtype.itemsize
    side = max(1, min(side, math.isqrt(defaults.CHUNK_BYTES // per_pixel)))
    cy, cx = _plane_chunks(source.shape[:2], unit, not tiled, side)
    return da.from_array(
        source,
        chunks=(cy, cx, source.shape[2]),
        asarray=False,
        lock=False,
        # Plain indexing, not dask.array's getter: workers need not import dask.array.
        getitem=operator.getitem,
        meta=np.empty((0, 0, 0), source.dtype),
        # Keys change with the file, so dask never mixes up two versions of it.
        name=f"bigquant-read-{tokenize(ident)}-{cy}x{cx}",
    )


def _plane_chunks(shape_yx, unit_yx, striped: bool, target: int) -> tuple[int, int]:
    height, width = shape_yx
    uy, ux = unit_yx
    if striped:
        # Strips span the full width: group them into chunks of about target² pixels.
        rows = max(1, (target * target) // max(width, 1))
        return chunk_side(max(rows, uy), uy, height), width
    return chunk_side(target, uy, height), chunk_side(target, ux, width)


def _check_budget(path: str, page, planes: TiffPlanes) -> None:
    """Refuse a file whose one tile or strip would not fit `defaults.SEGMENT_BYTES` of memory
    (damaged headers claim absurd sizes; better a clear error than a failed allocation)."""
    rows = page.tilelength if page.is_tiled else page.rowsperstrip
    cols = page.tilewidth if page.is_tiled else page.imagewidth
    nbytes = min(rows, planes.shape[0]) * cols * planes.shape[2] * planes.dtype.itemsize
    if nbytes > defaults.SEGMENT_BYTES:
        from dask.utils import format_bytes

        raise BigquantError(
            f"{path}: one tile or strip would take {format_bytes(nbytes)} of memory "
            f"({planes.shape[2]} samples per pixel): a damaged file?"
        )


def _check_segments(path: str, file_size: int, page) -> None:
    offsets, counts = page.dataoffsets, page.databytecounts
    if offsets and any(o + c > file_size for o, c in zip(offsets, counts, strict=False) if c):
        raise BigquantError(f"{path}: truncated TIFF (image data extends past the end of the file)")
