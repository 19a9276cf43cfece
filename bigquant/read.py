"""Read stage: open an image lazily as a ``(rows, columns, channels)`` dask array.

Nothing here decodes pixels: each dask chunk is a task that opens the source by
path on whichever thread or process runs it (tifffile's zarr store cannot be
pickled, so it is never shipped), and decodes only the TIFF tiles or strips
under that chunk. Chunks are whole multiples of the file's tiles or strips, so
no tile is ever decoded twice.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from .errors import BigquantError

log = logging.getLogger("bigquant")

SUPPORTED_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
#: Default target chunk side in pixels (2048² RGB uint8 is 12 MiB).
DEFAULT_CHUNK = 2048

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Image:
    """A lazily opened image.

    Attributes
    ----------
    data : dask.array.Array
        Pixels as ``(rows, columns, channels)``; greyscale has one channel.
    path : str | None
        Where it was read from, or None for an in-memory or user array.
    photometric : str
        TIFF photometric interpretation (``"rgb"``, ``"minisblack"``, …) or a
        best guess for other sources.
    """

    data: da.Array
    path: str | None = None
    photometric: str = "minisblack"


def as_image(data, *, path: str | None = None, photometric: str | None = None) -> Image:
    """Check an array-like is a supported image and give it the (Y, X, C) layout.

    Accepts numpy or dask arrays of shape ``(rows, columns)`` or
    ``(rows, columns, channels)`` and dtype uint8, uint16 or float32.
    """
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise BigquantError(
            f"unsupported image shape {tuple(arr.shape)}: expected (rows, columns) "
            "or (rows, columns, channels)"
        )
    if arr.dtype not in SUPPORTED_DTYPES:
        raise BigquantError(
            f"unsupported pixel type {arr.dtype}: bigquant reads uint8, uint16 and float32 images"
        )
    if min(arr.shape) < 1:
        raise BigquantError(f"empty image of shape {tuple(arr.shape)}")
    if photometric is None:
        photometric = "rgb" if arr.shape[2] in (3, 4) else "minisblack"
    return Image(arr, path=path, photometric=photometric)


def open_image(source, *, chunks: int | None = None) -> Image:
    """Open a TIFF, Zarr array, PNG or JPEG file lazily.

    Parameters
    ----------
    source : str or path-like
        A TIFF / BigTIFF / OME-TIFF file (series 0, full-resolution level), a
        Zarr array (or a group holding exactly one array), or a small PNG/JPEG.
    chunks : int, optional
        Target chunk side in pixels, rounded to whole TIFF tiles (tiled files)
        or strips (striped files, whose chunks span the full width).

    Returns
    -------
    Image
        Nothing is decoded: PNG and JPEG are the exception, decoded whole,
        which is why they are meant for small files only.
    """
    path = Path(source)
    if chunks is not None and chunks < 1:
        raise BigquantError(f"--chunks must be a positive number of pixels, not {chunks}")
    if not path.exists():
        raise BigquantError(f"{source}: no such file or directory")
    if path.is_dir():
        return _open_zarr(path, chunks)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise BigquantError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if magic[:4] in _TIFF_MAGIC:
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

_handles: dict[tuple, object] = {}
_handles_lock = threading.Lock()


class TiffSource:
    """Picklable, array-like view of one TIFF series level, for ``da.from_array``.

    Only the path travels with the task graph; each process opens the file once
    (on first use) and keeps the handle, keyed by path and modification time.
    """

    def __init__(self, path: str, series: int, shape, dtype, mtime: float):
        self.path = path
        self.series = series
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.mtime = mtime

    def _array(self):
        key = (self.path, self.series, self.mtime)
        with _handles_lock:
            arr = _handles.get(key)
            if arr is None:
                arr = _open_tiff_zarr(self.path, self.series)
                _handles[key] = arr
        return arr

    def __getitem__(self, index):
        try:
            return np.asarray(self._array()[index])
        except BigquantError:
            raise
        except Exception as exc:
            where = ", ".join(f"{s.start}:{s.stop}" for s in index if isinstance(s, slice))
            raise BigquantError(
                f"{self.path}: cannot decode pixels [{where}]: {type(exc).__name__}: {exc}"
            ) from None


def _open_tiff_zarr(path: str, series: int):
    import tifffile
    import zarr
    from tifffile.zarr import ZarrTiffStore

    tif = tifffile.TiffFile(path)
    store = ZarrTiffStore(tif.series[series], level=0)
    return zarr.open_array(store, mode="r")


def _open_tiff(path: Path, chunks: int | None) -> Image:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise BigquantError(f"{path}: TIFF holds no image")
            if len(tif.series) > 1:
                log.warning(
                    "%s holds %d image series; using the first (%s)",
                    path,
                    len(tif.series),
                    tif.series[0].kind,
                )
            series = tif.series[0]
            level = series.levels[0]
            page = level.keyframe
            axes, shape, dtype = level.axes, level.shape, level.dtype
            # JPEG-in-TIFF is stored as YCbCr but decoded to RGB.
            photometric = page.photometric.name.lower().replace("ycbcr", "rgb")
            tiled = page.is_tiled
            unit = (
                (page.tilelength, page.tilewidth) if tiled else (page.rowsperstrip, page.imagewidth)
            )
            # Touch every tile offset now so a truncated file fails before any work is done.
            _check_segments(path, page)
    except BigquantError:
        raise
    except Exception as exc:
        raise BigquantError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None

    if photometric == "palette":
        raise BigquantError(f"{path}: palette (indexed) TIFFs are already quantized")
    if dtype not in SUPPORTED_DTYPES:
        raise BigquantError(
            f"{path}: unsupported pixel type {dtype}: bigquant reads uint8, uint16 and float32 images"
        )
    if "Y" not in axes or "X" not in axes:
        raise BigquantError(f"{path}: unsupported TIFF layout (axes {axes})")
    channel_axis = "S" if "S" in axes else ("C" if "C" in axes else None)
    extra = [a for a in axes if a not in ("Y", "X", channel_axis)]
    if extra and any(shape[axes.index(a)] > 1 for a in extra):
        log.warning(
            "%s: series 0 has axes %s; quantizing only its first %s plane",
            path,
            axes,
            "/".join(extra),
        )

    target = chunks or DEFAULT_CHUNK
    cy, cx = _plane_chunks(
        (shape[axes.index("Y")], shape[axes.index("X")]), unit, not tiled, target
    )
    native_chunks = tuple(
        cy if a == "Y" else cx if a == "X" else (shape[i] if a == channel_axis else 1)
        for i, a in enumerate(axes)
    )
    source = TiffSource(os.fspath(path.resolve()), 0, shape, dtype, path.stat().st_mtime)
    arr = da.from_array(
        source,
        chunks=native_chunks,
        asarray=False,
        lock=False,
        fancy=False,
        meta=np.empty((0,) * len(shape), dtype),
        name=f"bigquant-read-{tokenize_path(path)}-{cy}x{cx}",
    )
    # Drop the extra axes (first plane), then order as (Y, X, C).
    arr = arr[tuple(0 if a in extra else slice(None) for a in axes)]
    kept = [a for a in axes if a not in extra]
    if channel_axis is None:
        arr = arr[..., None]
        kept.append("C")
        channel_axis = "C"
    arr = arr.transpose([kept.index("Y"), kept.index("X"), kept.index(channel_axis)])
    return as_image(arr, path=os.fspath(path), photometric=photometric)


def _check_segments(path: Path, page) -> None:
    size = path.stat().st_size
    offsets, counts = page.dataoffsets, page.databytecounts
    if offsets and any(o + c > size for o, c in zip(offsets, counts, strict=False) if c):
        raise BigquantError(f"{path}: truncated TIFF (image data extends past the end of the file)")


def tokenize_path(path: Path) -> str:
    """Name for a file's dask keys that changes when the file does."""
    from dask.base import tokenize

    st = path.stat()
    return tokenize(os.fspath(path.resolve()), st.st_mtime_ns, st.st_size)


# -- Zarr, PNG, JPEG ----------------------------------------------------------------------------


def _open_zarr(path: Path, chunks: int | None) -> Image:
    import zarr

    try:
        node = zarr.open(path, mode="r")
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
    zc = node.chunks
    target = chunks or DEFAULT_CHUNK
    cy = _chunk_side(target, zc[0], node.shape[0])
    cx = _chunk_side(target, zc[1], node.shape[1])
    arr = da.from_zarr(node, chunks=(cy, cx, *node.shape[2:]))
    return as_image(arr, path=os.fspath(path))


def _open_small(path: Path, chunks: int | None) -> Image:
    import imagecodecs

    try:
        pixels = imagecodecs.imread(os.fspath(path))
    except Exception as exc:
        raise BigquantError(f"{path}: cannot decode image ({exc})") from None
    target = chunks or DEFAULT_CHUNK
    arr = da.from_array(pixels, chunks=(target, target, *pixels.shape[2:]))
    return as_image(arr, path=os.fspath(path))
