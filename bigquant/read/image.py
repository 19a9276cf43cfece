"""The image the pipeline reads: `Image`, and `as_image` for arrays given by the user."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BigquantError

# dask.array only inside the functions that build graphs: worker processes running this
# package's chunk tasks never import it (see bigquant.cluster._WORKER_MODULES).
if TYPE_CHECKING:
    import dask.array as da

#: Pixel types bigquant quantizes as they are (codebook and outputs in the same type).
SUPPORTED_DTYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "int8", "int16", "float32", "float64")
)


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


def chunk_side(target: int, unit: int, limit: int) -> int:
    """Largest whole multiple of ``unit`` not above ``target`` (at least one unit)."""
    return min(max(unit, target // unit * unit), max(limit, 1))
