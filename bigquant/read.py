"""Read stage: open an image lazily as a ``(rows, columns, channels)`` dask array.

Nothing here decodes pixels: each dask chunk is a task that opens the source by
path on whichever thread or process runs it (tifffile's zarr store cannot be
pickled, so it is never shipped), and decodes only the TIFF tiles or strips
under that chunk. Chunks are whole multiples of the file's tiles or strips, so
no tile is ever decoded twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from dask.base import tokenize

from . import defaults, location
from .errors import BigquantError, ParameterError
from .kernels import convert

# dask.array only inside the functions that build graphs: worker processes running this
# module's chunk tasks never import it (see bigquant.cluster._WORKER_MODULES).
if TYPE_CHECKING:
    import dask.array as da

log = logging.getLogger("bigquant")

#: Pixel types bigquant quantizes as they are (codebook and outputs in the same type).
SUPPORTED_DTYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "int8", "int16", "float32", "float64")
)

#: The first four bytes of a TIFF or BigTIFF file.
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Image:
    """A lazily opened image: a dask array of pixels and what the source says about them.

    Made by `open_image` (a file) or `as_image` (an array); holding one reads
    no pixels.

    Parameters
    ----------
    data : dask.array.Array
        Pixels as ``(rows, columns, channels)``, as viewers show them (see
        `Decoding`); greyscale has one channel. Colour channels come first,
        then any extra ones (alpha, or others: see ``extrasamples``).
    path : str or None
        Where it was read from, or None for an in-memory or user array.
    photometric : str
        ``"rgb"`` or ``"minisblack"``: how the values of ``data`` are to be shown.
    geotiff : dict or None
        The GeoTIFF tags of a georeferenced TIFF, verbatim (see `geotiff_tags`).
    pixel_size : dict or None
        Physical size of a pixel, ``{"y": …, "x": …, "unit": "micrometer"}``
        (OME-NGFF unit names), from an OME-TIFF's ``PhysicalSizeY/X``.
    extrasamples : tuple of int
        TIFF ExtraSamples codes of the channels after the colour ones: 0
        unspecified, 1 associated (premultiplied) alpha, 2 unassociated alpha.
    bits : int or None
        Significant bits of integer values (12 for 12-bit data in uint16), the
        peak of PSNR being ``2**bits - 1``; None for floats.
    orientation : int
        TIFF Orientation (1, the default, is rows top to bottom, columns left
        to right). ``data`` is in stored order: outputs carry the tag.
    nodata : float or None
        The value of pixels that hold no data (all channels equal to it; NaN
        pixels of float images always count), or None.
    converted : str or None
        How stored values were turned into ``data`` (``"CIELab to sRGB"``, …).
    rechunked : callable, optional
        Takes a chunk side and returns ``data`` chunked so, read afresh from
        the source (see `with_chunks`); None: ``data`` is rechunked.

    Examples
    --------
    >>> import numpy as np
    >>> import bigquant
    >>> image = bigquant.as_image(np.zeros((480, 640, 3), np.uint8))
    >>> image.data.shape, image.photometric, image.bits
    ((480, 640, 3), 'rgb', 8)
    >>> image = bigquant.open_image("scan.tif")  # doctest: +SKIP
    >>> image.data.chunksize, image.geotiff is not None  # doctest: +SKIP
    ((2048, 2048, 3), True)
    """

    data: da.Array
    path: str | None = None
    photometric: str = "minisblack"
    geotiff: dict | None = None
    pixel_size: dict | None = None
    extrasamples: tuple[int, ...] = ()
    bits: int | None = None
    orientation: int = 1
    nodata: float | None = None
    converted: str | None = None
    #: The same pixels in chunks of another side, without opening the source again.
    rechunked: Callable[[int], da.Array] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def with_chunks(self, side: int) -> da.Array:
        """``data`` in chunks of about ``side`` (whole tiles of a TIFF), read lazily too.

        Parameters
        ----------
        side : int
            Target chunk side in pixels, rounded to whole TIFF tiles or strips.

        Returns
        -------
        dask.array.Array, shape (Y, X, C)
            The same pixels. For an opened file each chunk reads only the
            tiles under it, not ``data``'s larger chunks: this is how
            `compress` reads only the blocks its sample is drawn from (pass
            the result to `fit_codebook` for the same). For an array it is
            ``data.rechunk``.

        Examples
        --------
        >>> import numpy as np
        >>> import bigquant
        >>> image = bigquant.as_image(np.zeros((1000, 1000, 3), np.uint8))
        >>> image.with_chunks(512).chunks[:2]
        ((512, 488), (512, 488))
        """
        if self.rechunked is None:
            return self.data.rechunk((side, side, -1))
        return self.rechunked(side)


#: OME-XML length units and their OME-NGFF (UDUNITS-2) names.
_UNITS = {"Å": "angstrom", "nm": "nanometer", "µm": "micrometer", "\u03bcm": "micrometer",
          "um": "micrometer", "mm": "millimeter", "cm": "centimeter", "m": "meter"}  # fmt: skip


def ome_pixel_size(ome_xml: str | None) -> dict | None:
    """``PhysicalSizeY/X`` of the first image of OME-XML, or None where they are missing."""
    import xml.etree.ElementTree as ET

    if not ome_xml:
        return None
    pixels = next((e for e in ET.fromstring(ome_xml).iter() if e.tag.endswith("}Pixels")), None)
    if pixels is None or not {"PhysicalSizeX", "PhysicalSizeY"} <= set(pixels.attrib):
        return None
    units = {pixels.get(f"PhysicalSize{a}Unit", "µm") for a in "XY"}
    if len(units) != 1 or units - set(_UNITS):
        return None  # no one unit OME-NGFF can name for both axes
    return {
        "y": float(pixels.get("PhysicalSizeY")),
        "x": float(pixels.get("PhysicalSizeX")),
        "unit": _UNITS[units.pop()],
    }


#: The TIFF tags that georeference an image (GeoTIFF 1.1: pixel scale, tie points,
#: transformation, GeoKey directory, double and ASCII parameters).
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)


def geotiff_tags(page) -> dict | None:
    """The GeoTIFF tags of a TIFF page as ``{code: {"type", "count", "value"}}``, or None.

    Kept verbatim, to be written into outputs as they are (JSON: codes are strings).
    """
    tags = {
        str(code): {
            "type": int(tag.dtype),
            "count": int(tag.count),
            "value": tag.value if isinstance(tag.value, str) else list(tag.value),
        }
        for code in GEOTIFF_TAGS
        if (tag := page.tags.get(code)) is not None
    }
    return tags or None


def georeference(tags: dict | None) -> tuple[str | None, list[float] | None]:
    """The CRS (``"EPSG:32633"``, or the GeoTIFF citation) and GDAL geotransform of GeoTIFF tags.

    The geotransform is ``[x0, dx, rx, y0, ry, dy]``: the world position of
    pixel (row, column) is ``(x0 + column dx + row rx, y0 + column ry + row dy)``.
    """
    if not tags:
        return None, None
    keys = tags.get("34735", {}).get("value", [])
    entries = {keys[i]: keys[i + 1 : i + 4] for i in range(4, len(keys) - 3, 4)}
    crs = None
    for key in (3072, 2048):  # ProjectedCSTypeGeoKey, GeographicTypeGeoKey
        if key in entries and entries[key][0] == 0 and 0 < entries[key][2] < 32767:
            crs = f"EPSG:{entries[key][2]}"
            break
    else:
        if 1026 in entries and entries[1026][0] == 34737 and "34737" in tags:  # citation
            _, count, offset = entries[1026]
            crs = tags["34737"]["value"][offset : offset + count].rstrip("|") or None
    transform = None
    if "34264" in tags:
        m = tags["34264"]["value"]
        transform = [m[3], m[0], m[1], m[7], m[4], m[5]]
    elif "33922" in tags and "33550" in tags:
        i, j, _, x, y, _ = tags["33922"]["value"][:6]
        sx, sy = tags["33550"]["value"][:2]
        transform = [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]
    return crs, transform


def as_image(data, *, path: str | None = None, photometric: str | None = None, **fields) -> Image:
    """Check an array-like is a supported image and give it the (Y, X, C) layout.

    Accepts numpy or dask arrays of shape ``(rows, columns)`` or
    ``(rows, columns, channels)`` of a dtype in `SUPPORTED_DTYPES` (uint8,
    uint16, int8, int16, float32, float64); float16 becomes float32 and bool
    0 / 255 (uint8), as they are shown. Reads no pixels.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        The pixels, shape (Y, X) or (Y, X, C). A numpy array is wrapped in a
        single-chunk dask array; give a chunked dask array for large images.
    path : str, optional
        Where the pixels came from, named in error messages.
    photometric : {"rgb", "minisblack"}, optional
        How the values are shown; by default ``"rgb"`` for 3 or 4 channels
        (the fourth being alpha), else ``"minisblack"``.
    **fields
        Other fields of `Image` (``nodata``, ``extrasamples``, ``bits``, …).
        Integer images get ``bits`` of their dtype by default, float ones
        ``nodata`` NaN.

    Returns
    -------
    Image
        The image, ``data`` as a ``(Y, X, C)`` dask array.

    Raises
    ------
    BigquantError
        An array of another number of dimensions, an unsupported dtype, an
        empty one, an RGB one of fewer than 3 channels, or ``extrasamples``
        that do not match the channels past the colour ones.

    Examples
    --------
    >>> import dask.array as da
    >>> import bigquant
    >>> image = bigquant.as_image(da.zeros((4096, 4096), dtype="uint16", chunks=1024))
    >>> image.data.shape, image.photometric, image.bits
    ((4096, 4096, 1), 'minisblack', 16)
    """
    import dask.array as da

    arr = data if isinstance(data, da.Array) else da.asarray(data)
    where = f"{path}: " if path else ""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise BigquantError(
            f"{where}unsupported image shape {tuple(arr.shape)}: expected (rows, columns) "
            "or (rows, columns, channels)"
        )
    if arr.dtype in _WIDENED:
        fields.setdefault("converted", f"{arr.dtype} to {_WIDENED[arr.dtype]}")
        if fields.get("rechunked") is not None:
            fields["rechunked"] = _widened(fields["rechunked"])
        arr = arr.map_blocks(_widen, dtype=_WIDENED[arr.dtype])
    if arr.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise BigquantError(
            f"{where}unsupported pixel type {arr.dtype}: bigquant reads {names} "
            "(and float16, and 1-bit, as they are shown)"
        )
    if min(arr.shape) < 1:
        raise BigquantError(f"{where}empty image of shape {tuple(arr.shape)}")
    if photometric is None:
        photometric = "rgb" if arr.shape[2] in (3, 4) else "minisblack"
    if photometric == "rgb" and arr.shape[2] < 3:
        raise BigquantError(f"{where}an RGB image needs 3 channels, not {arr.shape[2]}")
    colour = 3 if photometric == "rgb" else 1
    fields.setdefault("extrasamples", _default_extras(arr.shape[2], colour))
    if len(fields["extrasamples"]) != arr.shape[2] - colour:
        raise BigquantError(
            f"{where}{len(fields['extrasamples'])} extra sample(s) declared for "
            f"{arr.shape[2] - colour} channel(s) past the colour ones"
        )
    if np.issubdtype(arr.dtype, np.integer):
        fields.setdefault("bits", 8 * arr.dtype.itemsize)
    elif fields.get("nodata") is None:
        fields["nodata"] = math.nan
    return Image(arr, path, photometric, **fields)


def _default_extras(n_channels: int, colour: int) -> tuple[int, ...]:
    """ExtraSamples of an array's channels past the colour ones: RGBA's fourth is
    unassociated alpha (as in PNG), others unspecified."""
    extras = n_channels - colour
    return (2,) if colour == 3 and extras == 1 else (0,) * max(extras, 0)


#: Types read as a wider one that holds every value exactly (bool as 8-bit black and white).
_WIDENED = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}


def _widened(array: Callable) -> Callable:
    """``array`` (a function returning a dask array), widened as `_WIDENED` says."""

    @functools.wraps(array)
    def widened(side):
        arr = array(side)
        return arr.map_blocks(_widen, dtype=_WIDENED[arr.dtype])

    return widened


def _widen(block: np.ndarray) -> np.ndarray:
    if block.dtype == bool:
        return block.astype(np.uint8) * np.uint8(255)
    return block.astype(_WIDENED[block.dtype])


def open_image(source, *, chunks: int | None = None) -> Image:
    """Open a TIFF, Zarr array, PNG or JPEG file lazily.

    Parameters
    ----------
    source : str or path-like
        A TIFF / BigTIFF / OME-TIFF file (series 0, full-resolution level), a
        Zarr array (or a group holding exactly one array), or a small PNG/JPEG;
        a local path or an fsspec URL (``s3://…`` with s3fs installed).
    chunks : int, optional
        Target chunk side in pixels, rounded to whole TIFF tiles (tiled files)
        or strips (striped files, whose chunks span the full width).

    Returns
    -------
    Image
        Nothing is decoded: PNG and JPEG are the exception, decoded whole,
        which is why they are meant for small files only. The TIFF header
        (and every tile offset, to refuse a truncated file now) or the Zarr
        metadata is all that is read.

    Raises
    ------
    ParameterError
        ``chunks`` is less than 1.
    BigquantError
        A missing or unreadable file; a file that is not a TIFF, PNG, JPEG
        or Zarr array (or a bigquant store: decompress it first); a TIFF
        bigquant does not read (volumetric, multi-ink, floating-point Lab, a
        photometric interpretation other than grey, RGB, palette, CMYK or
        Lab), a truncated or damaged one; or pixels `as_image` refuses.

    Examples
    --------
    >>> import bigquant
    >>> image = bigquant.open_image("scan.tif", chunks=4096)  # doctest: +SKIP
    >>> image.data  # doctest: +SKIP
    dask.array<bigquant-read-…, shape=(40000, 60000, 3), dtype=uint8, chunksize=(4096, 4096, 3), …>
    >>> image = bigquant.open_image("s3://bucket/scan.tif")  # doctest: +SKIP
    """
    path = location.normalize(source)
    if chunks is not None and chunks < 1:
        raise ParameterError(f"`chunks` must be a positive number of pixels, not {chunks}")
    if not location.exists(path):
        raise BigquantError(f"{source}: no such file or directory")
    if location.isdir(path):
        return _open_zarr(path, chunks)
    try:
        with location.open_input(path) as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise BigquantError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if magic[:4] in TIFF_MAGIC:
        return _open_tiff(path, chunks)
    if magic.startswith(_PNG_MAGIC) or magic.startswith(_JPEG_MAGIC):
        return _open_small(path, chunks)
    raise BigquantError(f"{source}: not a TIFF, PNG, JPEG or Zarr image")


def _chunk_side(target: int, unit: int, limit: int) -> int:
    """Largest whole multiple of ``unit`` not above ``target`` (at least one unit)."""
    return min(max(unit, target // unit * unit), max(limit, 1))


def _plane_chunks(shape_yx, unit_yx, striped: bool, target: int) -> tuple[int, int]:
    height, width = shape_yx
    uy, ux = unit_yx
    if striped:
        # Strips span the full width: group them into chunks of about target² pixels.
        rows = max(1, (target * target) // max(width, 1))
        return _chunk_side(max(rows, uy), uy, height), width
    return _chunk_side(target, uy, height), _chunk_side(target, ux, width)


# -- TIFF ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TiffPlanes:
    """The plane of a TIFF bigquant reads: the first page of series 0, level 0."""

    shape: tuple[int, int, int]
    dtype: np.dtype


class HandleCache:
    """Open files kept for reuse, at most ``size`` of them; what is evicted gets closed.

    A handle is borrowed with `borrow` and closed on eviction only once no
    thread is using it, so a long-lived worker that reads many files holds a
    bounded number of them open.
    """

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.Lock()
        # key -> [handle, what closes it, users]
        self._open: OrderedDict[tuple, list] = OrderedDict()

    @contextlib.contextmanager
    def borrow(
        self, key: tuple, opener: Callable[[], tuple[object, Callable[[], None]]]
    ) -> Iterator[object]:
        """The handle for ``key``, kept open while in use.

        ``opener`` opens it, returning the handle and what closes it.
        """
        with self._lock:
            entry = self._open.get(key)
            if entry is not None:
                entry[2] += 1
                self._open.move_to_end(key)
        if entry is None:
            # Opened outside the lock: on an object store that takes requests, which must not
            # hold up the threads reading other files.
            handle, close = opener()
            with self._lock:
                entry = self._open.setdefault(key, [handle, close, 0])
                entry[2] += 1
                self._evict()
            if entry[1] is not close:  # another thread opened it meanwhile
                close()
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[2] -= 1
                self._evict()

    def _evict(self) -> None:
        for key in [k for k, (_, _, users) in self._open.items() if not users]:
            if len(self._open) <= self.size:
                break
            self._open.pop(key)[1]()

    def __len__(self) -> int:
        return len(self._open)


#: TIFF files open in this process, keyed by path and modification stamp.
_handles = HandleCache(size=16)


class TiffSource:
    """Picklable ``(rows, columns, channels)`` array-like over TIFF tiles, for ``da.from_array``.

    Only the path travels with the task graph: each process opens the file on
    first use and keeps the handle in a bounded cache (`HandleCache`), keyed by
    path and modification time.
    A read decodes exactly the tiles or strips under the requested window, on
    the calling thread, so dask's threads decode in parallel (tifffile's Zarr
    store would funnel every decode through zarr's single event-loop thread).
    """

    def __init__(self, path: str, planes: _TiffPlanes, stamp: str, decoding: Decoding | None):
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
            with _handles.borrow((self.path, self.stamp), self._open) as tif:
                level = tif.series[0].levels[0]
                pixels = _read_window(level.pages[0], level.keyframe, y0, y1, x0, x1)
        except Exception as exc:
            raise BigquantError(
                f"{self.path}: cannot decode pixels [{y0}:{y1}, {x0}:{x1}]: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if self.decoding is not None:
            pixels = self.decoding.apply(pixels)
        return pixels[:, :, index[2]]


@dataclass(frozen=True)
class Decoding:
    """How the samples a TIFF stores become the values viewers show (`bigquant.kernels.convert`).

    ``stored`` is the file's photometric interpretation, ``bits`` its bits per
    sample; ``lut`` the 8-bit RGB colours of a palette; ``white`` the xy
    chromaticity of a Lab image's white; ``half`` marks float16 samples and
    ``signed`` signed RGB ones (shown as unsigned, `convert.offset_binary`).
    """

    stored: str
    bits: int
    lut: np.ndarray | None = dataclasses.field(default=None, compare=False)
    white: tuple[float, float] = convert.D50
    half: bool = False
    signed: bool = False

    @classmethod
    def needed(cls, stored: str, bits: int, dtype: np.dtype, **more) -> Decoding | None:
        """The decoding of these samples, or None where they are shown as stored."""
        signed_rgb = stored == "rgb" and dtype.kind == "i"
        if stored in ("minisblack", "rgb") and bits >= 8 and dtype != np.float16 and not signed_rgb:
            return None
        return cls(stored, bits, half=dtype == np.float16, signed=signed_rgb, **more)

    def shape(self, stored_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        height, width, samples = stored_shape
        if self.stored == "palette":
            return height, width, 3
        if self.stored == "separated":
            return height, width, samples - 1
        return stored_shape

    def dtype(self, stored: np.dtype) -> np.dtype:
        if self.stored == "palette" or self.bits < 8:
            return np.dtype(np.uint8)
        if self.signed:
            return np.dtype(f"u{stored.itemsize}")
        return np.dtype(np.float32) if stored == np.float16 else stored

    def describe(self) -> str:
        """What the conversion is, for the store's metadata."""
        if self.stored == "palette":
            return f"{self.bits}-bit palette to 8-bit RGB (colour map)"
        steps = []
        if self.bits < 8:
            steps.append(f"{self.bits}-bit to 8-bit")
        if self.stored == "miniswhite":
            steps.append("MinIsWhite to MinIsBlack (inverted)")
        elif self.signed:
            steps.append(f"signed RGB to unsigned (+{1 << (self.bits - 1)})")
        elif self.stored == "separated":
            steps.append("CMYK to RGB")
        elif self.stored in ("cielab", "icclab"):
            steps.append(f"{'CIELab' if self.stored == 'cielab' else 'ICCLab'} to sRGB")
        if self.half:
            steps.append("float16 to float32")
        return ", ".join(steps)

    def apply(self, block: np.ndarray) -> np.ndarray:
        """The shown values of a decoded ``(y, x, samples)`` block."""
        if self.stored == "palette":
            return convert.apply_colormap(block, self.lut)
        if self.bits < 8:
            block = convert.stretch_bits(block, self.bits)
        elif block.dtype == np.float16:
            block = block.astype(np.float32)
        if self.stored == "miniswhite":
            # 9- to 15-bit samples are inverted against their own peak (4095 for 12 bits).
            deep = 8 < self.bits < 8 * block.dtype.itemsize and block.dtype.kind == "u"
            return convert.invert(block, top=(1 << self.bits) - 1 if deep else None)
        if self.signed:
            return convert.offset_binary(block)
        if self.stored == "separated":
            return convert.cmyk_to_rgb(block)
        if self.stored in ("cielab", "icclab"):
            return convert.lab_to_rgb(block, self.stored, self.white)
        return block


def _read_window(page, keyframe, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Pixels ``[y0:y1, x0:x1]`` of one page as ``(rows, columns, samples)``."""
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
    fh = page.parent.filehandle
    segments = fh.read_segments(
        [page.dataoffsets[i] for i in indices],
        [page.databytecounts[i] for i in indices],
        indices=indices,
        sort=True,
        lock=fh.lock,
    )
    decode = keyframe.decode
    for data, i in segments:
        tile, (plane, _, ty, tx, _), _ = decode(data, i, jpegtables=keyframe.jpegtables)
        if tile is None:
            continue  # an empty (sparse) tile reads as zeros
        tile = tile[0]  # drop the depth axis
        ya, yb = max(y0, ty), min(y1, ty + th, height)
        xa, xb = max(x0, tx), min(x1, tx + tw, width)
        out[plane, ya - y0 : yb - y0, xa - x0 : xb - x0] = tile[
            ya - ty : yb - ty, xa - tx : xb - tx
        ]
    # Separate planes or contiguous samples: one of the two is 1.
    return np.moveaxis(out, 0, -1).reshape(y1 - y0, x1 - x0, separate * contig)


def _tiff_planes(path: str, series) -> _TiffPlanes:
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
    return _TiffPlanes((height, width, separate * contig), dtype)


#: Colour samples per pixel of the photometric interpretations bigquant reads.
_COLOUR_SAMPLES = {"minisblack": 1, "miniswhite": 1, "palette": 1, "rgb": 3, "ycbcr": 3,
                   "separated": 4, "cielab": 3, "icclab": 3}  # fmt: skip
#: TIFF tags read here: Orientation, InkSet, WhitePoint, GDAL_NODATA.
_ORIENTATION, _INKSET, _WHITEPOINT, _GDAL_NODATA = 274, 332, 318, 42113


def _open_tiff(path: str, chunks: int | None) -> Image:
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
            planes = _tiff_planes(path, tif.series[0])
            stored = _photometric(path, page, planes.shape[2])
            decoding = Decoding.needed(
                stored,
                page.bitspersample,
                planes.dtype,
                lut=convert.colormap_lut(page.colormap) if stored == "palette" else None,
                white=_white_point(page),
            )
            _check_budget(path, page, planes)
            tiled = page.is_tiled
            unit = (
                (page.tilelength, page.tilewidth) if tiled else (page.rowsperstrip, page.imagewidth)
            )
            fields = {
                "geotiff": geotiff_tags(page),
                "pixel_size": ome_pixel_size(tif.ome_metadata) if tif.is_ome else None,
                "extrasamples": _extrasamples(
                    page, stored, planes.shape[2] - _COLOUR_SAMPLES[stored]
                ),
                "orientation": int(_tag(page, _ORIENTATION, 1)),
                "nodata": _gdal_nodata(page),
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
    array = functools.partial(_tiff_array, source, ident, unit, tiled)
    photometric = "minisblack" if _COLOUR_SAMPLES[stored] == 1 and stored != "palette" else "rgb"
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

    from .progress import compute

    ident = location.identity(path)
    with location.open_input(path) as fh, tifffile.TiffFile(fh) as tif:
        page = tif.series[0].levels[0].keyframe
        planes = _tiff_planes(path, tif.series[0])
        entries = len(page.colormap[0])
        unit = (
            (page.tilelength, page.tilewidth)
            if page.is_tiled
            else (page.rowsperstrip, page.imagewidth)
        )
        tiled = page.is_tiled
    source = TiffSource(path, planes, f"{ident['size']}-{ident['mtime']}", None)
    indices = _tiff_array(source, ident, unit, tiled, defaults.CHUNK)
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


def _tiff_array(source: TiffSource, ident: dict, unit, tiled: bool, side: int) -> da.Array:
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


def _tag(page, code: int, default=None):
    tag = page.tags.get(code)
    return default if tag is None else tag.value


#: TIFF PhotometricInterpretation codes by name, read by number: tifffile cannot name some
#: pages' (a 12-bit MinIsWhite one: ``'int' object has no attribute 'name'``).
_PHOTOMETRIC_CODES = {0: "miniswhite", 1: "minisblack", 2: "rgb", 3: "palette", 4: "mask",
                      5: "separated", 6: "ycbcr", 8: "cielab", 9: "icclab"}  # fmt: skip


def _photometric(path: str, page, n_samples: int) -> str:
    """The stored photometric interpretation, checked to be one bigquant reads."""
    try:
        name = _PHOTOMETRIC_CODES.get(int(page.photometric))
    except (TypeError, ValueError):
        name = None
    if name is None and 283 not in page.tags and page.tags.get(262) is None:
        # No PhotometricInterpretation tag: what most readers assume.
        name = "rgb" if n_samples >= 3 else "minisblack"
    if name not in _COLOUR_SAMPLES:
        raise BigquantError(
            f"{path}: photometric interpretation {name or page.photometric} is not supported "
            "(bigquant reads grey, RGB, palette, CMYK and Lab images)"
        )
    if name == "separated" and _tag(page, _INKSET, 1) != 1:
        raise BigquantError(f"{path}: multi-ink (non-CMYK) separated images are not supported")
    if name in ("cielab", "icclab") and page.dtype.kind == "f":
        raise BigquantError(f"{path}: floating-point Lab images are not supported")
    if n_samples < _COLOUR_SAMPLES[name]:
        raise BigquantError(f"{path}: {name} image with only {n_samples} sample(s) per pixel")
    # JPEG-in-TIFF is stored as YCbCr but decoded to RGB.
    return "rgb" if name == "ycbcr" else name


def _white_point(page) -> tuple[float, float]:
    white = _tag(page, _WHITEPOINT)
    return convert.D50 if white is None or len(white) != 2 else (float(white[0]), float(white[1]))


def _extrasamples(page, stored: str, n_extra: int) -> tuple[int, ...]:
    """ExtraSamples codes of the ``n_extra`` samples past the colour ones (0 where undeclared).

    RGB with a fourth sample and no ExtraSamples tag (tools that omit it) is
    RGBA, as Pillow shows it (libtiff too draws it as alpha): unassociated alpha.
    """
    if stored == "rgb" and n_extra == 1 and 338 not in page.tags:
        return (2,)
    codes = tuple(int(e) for e in (page.extrasamples or ()))[-n_extra:] if n_extra else ()
    return (0,) * (n_extra - len(codes)) + codes


def _gdal_nodata(page) -> float | None:
    text = _tag(page, _GDAL_NODATA)
    try:
        return None if text is None else float(str(text).strip().rstrip("\x00"))
    except ValueError:
        log.warning("ignoring GDAL_NODATA %r: not a number", text)
        return None


def _check_budget(path: str, page, planes: _TiffPlanes) -> None:
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


# -- Zarr, PNG, JPEG ----------------------------------------------------------------------------


def _open_zarr(path: str, chunks: int | None) -> Image:
    import zarr

    try:
        node = zarr.open(location.zarr_store(path, read_only=True), mode="r")
    except Exception as exc:
        raise BigquantError(f"{path}: not a TIFF file or Zarr array ({exc})") from None
    if isinstance(node, zarr.Group):
        arrays = list(node.array_keys())
        if "labels" in arrays and "bigquant" in node.attrs:
            raise BigquantError(f"{path}: is a bigquant store; decompress it first")
        if len(arrays) != 1:
            raise BigquantError(
                f"{path}: Zarr group holds {len(arrays)} arrays; pass the path of the image array"
            )
        node = node[arrays[0]]
    if node.ndim not in (2, 3):
        raise BigquantError(
            f"{path}: unsupported image shape {node.shape}: expected (rows, columns[, channels])"
        )
    array = functools.partial(_zarr_array, node)
    return as_image(array(chunks or defaults.CHUNK), path=path, rechunked=array)


def _zarr_array(node, side: int) -> da.Array:
    import dask.array as da

    cy = _chunk_side(side, node.chunks[0], node.shape[0])
    cx = _chunk_side(side, node.chunks[1], node.shape[1])
    return da.from_zarr(node, chunks=(cy, cx, *node.shape[2:]))


def _open_small(path: str, chunks: int | None) -> Image:
    import imagecodecs

    try:
        with location.open_input(path) as fh:
            pixels = imagecodecs.imread(fh.read())
    except Exception as exc:
        raise BigquantError(f"{path}: cannot decode image ({exc})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]

    def array(side: int) -> da.Array:
        import dask.array as da

        return da.from_array(pixels, chunks=(side, side, -1))

    return as_image(array(chunks or defaults.CHUNK), path=path, rechunked=array)
