"""Format dispatch (`open_image`), and the readers of Zarr arrays, PNG and JPEG."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .. import defaults, location
from ..errors import BigquantError, ParameterError
from .image import Image, as_image, chunk_side
from .tiff import TIFF_MAGIC, open_tiff

if TYPE_CHECKING:
    import dask.array as da

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


_JPEG_MAGIC = b"\xff\xd8\xff"


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
        return open_tiff(path, chunks)
    if magic.startswith(_PNG_MAGIC) or magic.startswith(_JPEG_MAGIC):
        return _open_small(path, chunks)
    raise BigquantError(f"{source}: not a TIFF, PNG, JPEG or Zarr image")


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

    cy = chunk_side(side, node.chunks[0], node.shape[0])
    cx = chunk_side(side, node.chunks[1], node.shape[1])
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
