"""Write stage: label every chunk and store it in the Zarr ``labels`` array as it is made.

One task per chunk decodes the pixels, labels them and writes the labels, so a
chunk's pixels are in memory only while its task runs. Dask chunks match the
Zarr chunks one to one, so no two tasks ever write the same Zarr chunk.
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
from dask.base import tokenize

from .label import assign_block, table_pays


def regular_chunks(data: da.Array) -> da.Array:
    """Rechunk a (Y, X, C) array so every chunk but the last in each axis has one size.

    Zarr chunks are regular; dask chunks must coincide with them for safe writes.
    """
    cy, cx = max(data.chunks[0]), max(data.chunks[1])
    if (
        all(c == cy for c in data.chunks[0][:-1])
        and all(c == cx for c in data.chunks[1][:-1])
        and data.chunks[0][-1] <= cy
        and data.chunks[1][-1] <= cx
        and len(data.chunks[2]) == 1
    ):
        return data
    return data.rechunk((cy, cx, -1))


def _assign_write(
    block: np.ndarray, codebook: np.ndarray, use_table: bool, out, block_info=None
) -> np.ndarray:
    (y0, y1), (x0, x1), _ = block_info[0]["array-location"]
    labels, sse, counts = assign_block(block, codebook, use_table)
    out[y0:y1, x0:x1] = labels
    return np.concatenate(([sse], counts)).astype(np.float64)[None, None, :]


def write_labels(data: da.Array, codebook: np.ndarray, out) -> tuple[float, np.ndarray]:
    """Label every pixel of ``data`` with ``codebook`` and write the labels into ``out``.

    Reads the whole image once. ``data`` must be chunked like ``out`` (see
    `regular_chunks`). Returns the sum of squared errors over all pixels and
    channels, and the number of pixels given each colour.
    """
    n_colors = len(codebook)
    use_table = table_pays(data.shape[0] * data.shape[1], *codebook.shape, data.dtype)
    stats = data.map_blocks(
        functools.partial(_assign_write, codebook=codebook, use_table=use_table, out=out),
        dtype=np.float64,
        chunks=((1,) * len(data.chunks[0]), (1,) * len(data.chunks[1]), (n_colors + 1,)),
        name="bigquant-write-" + tokenize(data, codebook, str(out.store_path)),
    )
    total = stats.sum(axis=(0, 1)).compute()
    return float(total[0]), total[1:].astype(np.int64)
