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
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from .errors import BigquantError
from .label import apply_codebook

FORMAT_VERSION = 1
ATTR_KEY = "bigquant"
#: Per-chunk squared errors and colour counts, present only while a store is unfinished.
STATS_KEY = "chunk_stats"

log = logging.getLogger("bigquant")


def partial_path(dst) -> Path:
    """Where the output for ``dst`` is written until it is complete: ``.NAME.partial``."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.partial")


@contextlib.contextmanager
def atomic_output(dst, *, overwrite: bool = False, resumable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write ``dst`` into; move it in place on success.

    An existing ``dst`` is refused unless ``overwrite``, and is only replaced
    once the new output is complete. On a `BigquantError` (bad input) the
    partial output is removed. On an interrupt or any other failure it is
    removed too, unless ``resumable``: then it is kept for a later run to
    resume, and a stale one is left for the caller to reuse or clear.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise BigquantError(f"{dst} already exists (use --overwrite to replace it)")
    if not dst.parent.is_dir():
        raise BigquantError(f"{dst.parent}: no such directory")
    tmp = partial_path(dst)
    if not resumable:
        _remove(tmp)
    try:
        yield tmp
    except BigquantError:
        _remove(tmp)
        raise
    except BaseException:
        if resumable and tmp.exists():
            log.warning(
                "kept the unfinished output in %s: run again with --resume to finish it", tmp
            )
        else:
            _remove(tmp)
        raise
    _remove(dst)
    os.replace(tmp, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def labels_compressor(zarr_format: int):
    """Zstandard level 3: on photographs' labels it beats Blosc-zstd in both speed and size."""
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Zstd(level=3)
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=3)


def create_store(path: Path, shape, chunks, dtype, n_colors: int, *, zarr_format: int = 3):
    """Create the group, an empty ``labels`` array and the per-chunk stats array.

    Returns ``(group, labels, stats)``. ``stats[row, col]`` holds a chunk's
    squared error sum and colour counts once its labels are written (NaN
    before): it is how an interrupted run knows what is done. `finish_store`
    removes it.
    """
    import zarr

    if zarr_format not in (2, 3):
        raise BigquantError(f"--zarr-format must be 2 or 3, not {zarr_format}")
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
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
        shape=(*grid, 1 + n_colors),
        chunks=(1, 1, 1 + n_colors),
        dtype=np.float64,
        fill_value=np.nan,
    )
    return group, labels, stats


def open_partial(path: Path):
    """``(group, labels, stats)`` of an unfinished store, or None when there is none."""
    import zarr

    try:
        group = zarr.open_group(path, mode="r+")
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
    path : Path
    labels : zarr.Array
        The (rows, columns) label array.
    codebook : ndarray, shape (K, C)
    meta : dict
        ``attrs["bigquant"]``.
    """

    path: Path
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
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def open_store(path) -> Store:
    """Open a complete bigquant store for reading.

    Raises `BigquantError` for anything that is not one: a missing path, a
    plain Zarr array, a store whose run never completed, a malformed codebook.
    Labels past the codebook are caught when the labels are read.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise BigquantError(f"{path}: no such file or directory")
    try:
        group = zarr.open_group(path, mode="r")
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
