"""The bigquant store: a Zarr group of per-pixel labels plus the codebook, and safe outputs.

Contract (other tools read exactly this)::

    DST/                    Zarr group (format 3 by default, 2 on request)
      labels                2-D (rows, columns) array, uint8 for K ≤ 256 else uint16
      .attrs["codebook"]    K rows of C channel values in the source dtype's range
      .attrs["bigquant"]    format_version, source, n_colors_requested, n_colors, seed,
                            sample_size, n_iter, mse, psnr, ..., and "complete": true,
                            written last

``np.asarray(attrs["codebook"])[labels]`` is the quantized image.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import dask.array as da
import numpy as np

from . import location
from .errors import BigquantError
from .label import apply_codebook

FORMAT_VERSION = 1
ATTR_KEY = "bigquant"
#: Per-chunk squared errors and colour counts, present only while a store is unfinished.
STATS_KEY = "chunk_stats"

log = logging.getLogger("bigquant")


def partial_path(dst) -> str:
    """Where the output for ``dst`` is written until it is complete: ``.NAME.partial``."""
    return location.sibling(dst, f".{location.name(dst)}.partial")


@contextlib.contextmanager
def atomic_output(dst, *, overwrite: bool = False, resumable: bool = False) -> Iterator[str]:
    """Yield a temporary sibling location to write ``dst`` into; move it in place on success.

    An existing ``dst`` is refused unless ``overwrite``, and is only replaced
    once the new output is complete (by a rename on filesystems, a copy on
    object stores). On a `BigquantError` (bad input) the partial output is
    removed. On an interrupt or any other failure it is removed too, unless
    ``resumable``: then it is kept for a later run to resume, and a stale one
    is left for the caller to reuse or clear.
    """
    dst = location.normalize(dst)
    if location.exists(dst) and not overwrite:
        raise BigquantError(f"{dst} already exists (use --overwrite to replace it)")
    parent = location.sibling(dst, "")
    if not location.is_url(dst) and not location.isdir(parent):
        raise BigquantError(f"{parent}: no such directory")
    tmp = partial_path(dst)
    if not resumable:
        location.remove(tmp)
    try:
        yield tmp
    except BigquantError:
        location.remove(tmp)
        raise
    except BaseException:
        if resumable and location.exists(tmp):
            log.warning(
                "kept the unfinished output in %s: run again with --resume to finish it", tmp
            )
        else:
            location.remove(tmp)
        raise
    location.remove(dst)
    location.move(tmp, dst)


def labels_compressor(zarr_format: int):
    """Zstandard level 3: on photographs' labels it beats Blosc-zstd in both speed and size."""
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Zstd(level=3)
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=3)


def create_store(path: str, shape, chunks, dtype, n_colors: int, *, zarr_format: int = 3):
    """Create the group, an empty ``labels`` array and the per-chunk stats array.

    Returns ``(group, labels, stats)``. ``stats[row, col]`` holds a chunk's
    squared error sum, ΔE_OK sum and colour counts once its labels are written (NaN
    before): it is how an interrupted run knows what is done. `finish_store`
    removes it.
    """
    import zarr

    if zarr_format not in (2, 3):
        raise BigquantError(f"--zarr-format must be 2 or 3, not {zarr_format}")
    group = zarr.open_group(
        location.zarr_store(path, read_only=False), mode="w", zarr_format=zarr_format
    )
    labels = group.create_array(
        "labels",
        shape=tuple(shape),
        chunks=tuple(chunks),
        dtype=dtype,
        compressors=labels_compressor(zarr_format),
        fill_value=0,
        # Every chunk is written, even all-zero ones, so chunk files show progress.
        config={"write_empty_chunks": True},
        dimension_names=("y", "x") if zarr_format == 3 else None,
    )
    grid = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    stats = group.create_array(
        STATS_KEY,
        shape=(*grid, 2 + n_colors),
        chunks=(1, 1, 2 + n_colors),
        dtype=np.float64,
        fill_value=np.nan,
    )
    return group, labels, stats


def open_partial(path: str):
    """``(group, labels, stats)`` of an unfinished store, or None when there is none."""
    import zarr

    try:
        group = zarr.open_group(location.zarr_store(path, read_only=False), mode="r+")
        return group, group["labels"], group[STATS_KEY]
    except Exception:
        return None


def finish_store(group, meta: dict) -> None:
    """Drop the per-chunk stats and write the attributes, completion marker last."""
    del group[STATS_KEY]
    meta["complete"] = True
    group.attrs[ATTR_KEY] = meta


@dataclass(frozen=True)
class Store:
    """An opened, validated bigquant store.

    Attributes
    ----------
    path : str
        Local path or URL.
    labels : zarr.Array
        The (rows, columns) label array.
    codebook : ndarray, shape (K, C)
    meta : dict
        ``attrs["bigquant"]``.
    """

    path: str
    labels: object
    codebook: np.ndarray
    meta: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(rows, columns, channels)`` of the quantized image."""
        return (*self.labels.shape, self.codebook.shape[1])

    def labels_dask(self) -> da.Array:
        """Labels as a dask array chunked like the store."""
        return da.from_zarr(self.labels)

    def quantized(self) -> da.Array:
        """The quantized image ``codebook[labels]`` as a lazy ``(Y, X, C)`` dask array.

        Each chunk checks its labels against the codebook and fails with a
        `BigquantError` on a label past its end.
        """
        return apply_codebook(self.labels_dask(), self.codebook)

    def stored_bytes(self) -> int:
        """Bytes the store takes on disk."""
        return location.size(self.path)


def open_store(path) -> Store:
    """Open a complete bigquant store for reading.

    Raises `BigquantError` for anything that is not one: a missing path, a
    plain Zarr array, a store whose run never completed, a malformed codebook.
    Labels past the codebook are caught when the labels are read.
    """
    import zarr

    path = location.normalize(path)
    if not location.exists(path):
        raise BigquantError(f"{path}: no such file or directory")
    try:
        group = zarr.open_group(location.zarr_store(path, read_only=True), mode="r")
    except Exception:
        raise BigquantError(f"{path}: not a bigquant store (not a Zarr group)") from None
    meta = group.attrs.get(ATTR_KEY)
    if not isinstance(meta, dict) or "codebook" not in group.attrs or "labels" not in group:
        raise BigquantError(f"{path}: not a bigquant store (no labels or codebook)")
    if not meta.get("complete"):
        raise BigquantError(
            f"{path}: incomplete bigquant store (the run that wrote it did not finish)"
        )
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise BigquantError(
            f"{path}: store format {meta['format_version']} is newer than this bigquant reads "
            f"({FORMAT_VERSION}); upgrade bigquant"
        )
    labels = group["labels"]
    try:
        codebook = np.asarray(group.attrs["codebook"], dtype=meta["source"]["dtype"])
    except (KeyError, TypeError, ValueError):
        raise BigquantError(f"{path}: corrupt store (malformed codebook)") from None
    if codebook.ndim != 2 or len(codebook) == 0 or labels.ndim != 2:
        raise BigquantError(f"{path}: corrupt store (codebook or labels have the wrong shape)")
    if not np.issubdtype(labels.dtype, np.unsignedinteger):
        raise BigquantError(f"{path}: corrupt store (labels are {labels.dtype}, not unsigned)")
    return Store(path, labels, codebook, meta)
