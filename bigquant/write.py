"""Write stage: label every chunk and store it in the Zarr ``labels`` array as it is made.

One task per chunk decodes the pixels, labels them and writes the labels, so a
chunk's pixels are in memory only while its task runs. Dask chunks match the
Zarr chunks one to one, so no two tasks ever write the same Zarr chunk.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import dask
import numpy as np
from dask.base import tokenize

from .cluster import current_client
from .kernels.color import delta_e_stride, delta_e_sum
from .kernels.nearest import color_table, keep_table
from .label import Labelling, label_chunk, windows
from .progress import compute
from .store import STATS_HEAD

# dask.array only inside the functions that build graphs: worker processes running this
# module's chunk tasks never import it (see bigquant.cluster._WORKER_MODULES).
if TYPE_CHECKING:
    import dask.array as da


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
    block: np.ndarray, codebook: np.ndarray, how: Labelling, out, stats, where
) -> None:
    own, (y0, x0), (row, col) = where
    pixels, labels, sse, counts = label_chunk(block, codebook, own, (y0, x0), how)
    de, n_de = math.nan, 0
    if pixels.shape[2] == 3:
        de, n_de = delta_e_sum(
            pixels,
            labels,
            codebook,
            (y0, x0),
            delta_e_stride(*out.shape),
            skip=None if how.nodata is None else len(codebook) - 1,
        )
    out[y0 : y0 + labels.shape[0], x0 : x0 + labels.shape[1]] = labels
    # Written after the labels: a chunk with stats is finished, and a resumed run skips it.
    stats[row, col] = np.concatenate(([sse, de, n_de], counts))


def write_labels(
    data: da.Array,
    codebook: np.ndarray,
    out,
    stats,
    *,
    space: str = "rgb",
    dither: str | None = None,
    nodata: float | None = None,
    skip: np.ndarray | None = None,
) -> None:
    """Label every pixel of ``data`` with ``codebook`` and write the labels into ``out``.

    Reads the whole image once (but the chunks marked in ``skip``). ``data``
    must be chunked like ``out`` (see `regular_chunks`). Each chunk's squared
    error sum, ΔE_OK sum (over its pixels with data on the lattice of
    `delta_e_stride`; NaN unless RGB), the number of those pixels and its
    colour counts go to ``stats[row, col]``, an array of shape ``(chunk rows,
    chunk columns, 3 + K)``, once its labels are written.
    ``space``, ``dither`` and ``nodata`` are as in `bigquant.label.assign`;
    Floyd–Steinberg also reads a margin of each chunk's neighbours.
    """
    how = Labelling.for_image(data, codebook, space, dither, nodata)
    token = tokenize(data, codebook, how, str(out.store_path))
    _share_table(codebook, how)
    tasks = [
        dask.delayed(_assign_write, pure=True)(
            w.block,
            codebook,
            how,
            out,
            stats,
            (w.own, w.origin, w.index),
            dask_key_name=f"bigquant-write-{token}-{w.index[0]}-{w.index[1]}",
        )
        for w in windows(data, how.margin)
        if skip is None or not skip[w.index]
    ]
    compute(*tasks)


def _share_table(codebook: np.ndarray, how: Labelling) -> None:
    """On a cluster, give every worker this process's colour table.

    Made once here (where the fit has usually made it already) and broadcast,
    instead of each worker filling its own: 0.8 s of CPU per worker for RGB
    with 256 colours. The tasks do not depend on the copy: a worker that joins
    later, or replaces a lost one, fills its own table as before.
    """
    client = current_client()
    if client is None or not how.use_table:
        return
    colors = how.colors(codebook)
    shared = client.scatter(color_table(colors, how.space), broadcast=True, hash=False)
    client.run(_keep_shared, shared.key, colors, how.space)
    shared.release()


def _keep_shared(key, colors: np.ndarray, space: str, dask_worker=None) -> None:
    if key in dask_worker.data:
        keep_table(colors, space, dask_worker.data[key])


def total_stats(stats) -> tuple[float, float, np.ndarray]:
    """Squared error sum, mean ΔE_OK (NaN unless RGB) and per-colour pixel counts.

    Summed over all chunks in chunk order.
    """
    sse, de, n_de = 0.0, 0.0, 0
    counts = np.zeros(stats.shape[2] - STATS_HEAD, np.int64)
    for row in range(stats.shape[0]):  # a row of chunks at a time: K can be 65536
        values = stats[row]
        sse += float(values[:, 0].sum())
        de += float(values[:, 1].sum())
        n_de += int(values[:, 2].sum())
        counts += values[:, STATS_HEAD:].sum(axis=0).astype(np.int64)
    return sse, de / n_de if n_de else math.nan, counts
