"""Write stage: label every chunk and store it in the Zarr ``labels`` array as it is made.

One task per write unit decodes its pixels, labels them one Zarr chunk at a
time and writes the labels, so a unit's pixels are in memory only while its
task runs. A write unit is one Zarr chunk, or a square of them (`write_unit`):
one shard in Zarr format 3. Dask blocks are the write units, so no two tasks
ever write the same Zarr chunk or shard; and every chunk is labelled from the
same pixels whatever the unit, so the labels do not depend on it.

The tasks form one blockwise layer over the image (reading is fused into
them), built without a Python call per unit: planning a 100-gigapixel image
takes about as long as materialising its few thousand keys.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from dask.base import tokenize

from .cluster import current_client
from .defaults import CHUNK_BYTES
from .kernels.color import delta_e_stride, delta_e_sum
from .kernels.nearest import color_table, keep_table
from .label import Labelling, label_chunk
from .store import STATS_HEAD

# dask.array only inside the functions that build graphs: worker processes running this
# module's chunk tasks never import it (see bigquant.cluster._WORKER_MODULES).
if TYPE_CHECKING:
    import dask.array as da
    from dask.delayed import Delayed

#: Label chunks an image has before its write unit grows to 2 x 2 of them, and to 4 x 4 at
#: 4 times as many: with 2048² chunks, from 8.6 and from 34 gigapixels. Measured on this
#: project's scale benchmark (docs, "Running at 100 gigapixels"): the scheduler's ~2 ms a
#: task would hold 64 workers at 87 % on 100 GP in 2 x 2 units, 96 % in 4 x 4.
UNIT_GROWS_AT = 2048
#: Largest write unit, in label chunks a side (8192² pixels of 2048² chunks: 192 MiB of RGB).
MAX_UNIT = 4


def write_unit(
    shape: tuple[int, int], chunks: tuple[int, int], margin: int = 0, pixel_bytes: int = 3
) -> int:
    """Label chunks a side of one write task, for an image of ``shape`` in ``chunks``.

    1 up to `UNIT_GROWS_AT` chunks, then 2, then `MAX_UNIT` from 4 times as
    many: a 100-gigapixel image in 2048² chunks has 1,521 write tasks rather
    than 24,025, each of which still reads and labels one chunk at a time. At
    least ``margin`` pixels a side, so that a unit's margin (error diffusion)
    lies in its neighbours alone. A unit grows only while its pixels
    (``pixel_bytes`` each) stay within `bigquant.defaults.CHUNK_BYTES`.
    """
    n_chunks = math.prod(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    unit = 1
    while (
        unit < MAX_UNIT
        and n_chunks >= UNIT_GROWS_AT * unit * unit
        and math.prod(chunks) * (2 * unit) ** 2 * pixel_bytes <= CHUNK_BYTES
    ):
        unit *= 2
    while min(chunks) * unit < margin:
        unit += 1
    return unit


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
    block: np.ndarray,
    codebook: np.ndarray,
    how: Labelling,
    out,
    stats,
    where: tuple[slice, slice, slice],
) -> np.ndarray:
    """Label and write the write unit at ``where`` in the image (its pixels grown by
    ``how.margin`` into its neighbours in ``block``)."""
    height, width = out.shape
    cy, cx = out.chunks  # label chunks (inside shards, in format 3)
    m = how.margin
    (y0, y1), (x0, x1) = (where[0].start, where[0].stop), (where[1].start, where[1].stop)
    # Where the block starts in the image: it holds up to `m` pixels above and left of the unit.
    by, bx = max(0, y0 - m), max(0, x0 - m)
    labels = np.empty((y1 - y0, x1 - x0), out.dtype)
    rows = range(y0, y1, cy)
    cols = range(x0, x1, cx)
    values = np.empty((len(rows), len(cols), stats.shape[2]), np.float64)
    stride = delta_e_stride(height, width)
    for i, cy0 in enumerate(rows):
        cy1 = min(cy0 + cy, y1)
        for j, cx0 in enumerate(cols):
            cx1 = min(cx0 + cx, x1)
            top, left = max(0, cy0 - m), max(0, cx0 - m)
            window = block[
                top - by : min(cy1 + m, height) - by, left - bx : min(cx1 + m, width) - bx
            ]
            own = (slice(cy0 - top, cy1 - top), slice(cx0 - left, cx1 - left))
            pixels, chunk, sse, counts = label_chunk(window, codebook, own, (cy0, cx0), how)
            de, n_de = math.nan, 0
            if pixels.shape[2] == 3:
                de, n_de = delta_e_sum(
                    pixels,
                    chunk,
                    codebook,
                    (cy0, cx0),
                    stride,
                    skip=None if how.nodata is None else len(codebook) - 1,
                )
            labels[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = chunk
            values[i, j] = np.concatenate(([sse, de, n_de], counts))
    out[y0:y1, x0:x1] = labels
    # Written after the labels: a chunk with stats is finished, and a resumed run skips it.
    r0, c0 = y0 // cy, x0 // cx
    stats[r0 : r0 + len(rows), c0 : c0 + len(cols)] = values
    return np.ones((1, 1, 1), bool)


def label_writes(
    data: da.Array,
    codebook: np.ndarray,
    out,
    stats,
    *,
    space: str = "rgb",
    dither: str | None = None,
    nodata: float | None = None,
    skip: np.ndarray | None = None,
) -> Delayed:
    """The tasks that label every pixel of ``data`` with ``codebook`` and write them into ``out``.

    One `dask.delayed.Delayed`, whose computation writes every write unit
    not finished and gives their tasks' results; it reads the whole image once (but
    the chunks marked in ``skip``). Each block of ``data`` is a write unit: a square of whole
    chunks of ``out`` (the edge ones cut by the image's edge), such as
    `write_unit` sizes, and a whole shard of ``out`` if it is sharded. Each
    chunk's squared error sum, ΔE_OK sum (over its pixels with data on the
    lattice of `delta_e_stride`; NaN unless RGB), the number of those pixels
    and its colour counts go to ``stats[row, col]``, an array of shape
    ``(chunk rows, chunk columns, 3 + K)`` chunked by write unit, once its
    labels are written; ``skip`` is shaped like it. ``space``, ``dither``
    and ``nodata`` are as in `bigquant.label.assign`; Floyd–Steinberg also
    reads a margin of each unit's neighbours.
    """
    import dask
    from dask.array.core import ArraySliceDep
    from dask.array.overlap import overlap_internal
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    how = Labelling.for_image(data, codebook, space, dither, nodata)
    unit = data.chunks[0][0], data.chunks[1][0]
    chunks = tuple(out.chunks)
    if any(u % c for u, c in zip(unit, chunks, strict=True)):
        raise ValueError(f"write units of {unit} are not whole chunks of {chunks}")
    _share_table(codebook, how)
    # Grown by the margin into the neighbours, which every unit but the last in each axis
    # holds in full (see `write_unit`); dask's `overlap` would rechunk a smaller last one.
    grown = data if how.margin == 0 else overlap_internal(data, {0: how.margin, 1: how.margin})
    token = tokenize(data, codebook, how, str(out.store_path), chunks)
    written = grown.map_blocks(
        _assign_write,
        codebook,
        how,
        out,
        stats,
        # Each unit's place in the image (as `dask.array.store` passes its regions).
        ArraySliceDep(data.chunks),
        chunks=tuple((1,) * n for n in data.numblocks),
        dtype=bool,
        meta=np.empty((0, 0, 0), bool),
        name=f"bigquant-write-{token}",
    )
    # Fuses each unit's read into its task, and leaves one layer of one key per unit.
    (written,) = dask.optimize(written)
    per_unit = stats.chunks[0], stats.chunks[1]
    keys = [
        (written.name, r, c, 0)
        for r, c in np.ndindex(*data.numblocks[:2])
        if skip is None
        or not skip[
            r * per_unit[0] : (r + 1) * per_unit[0], c * per_unit[1] : (c + 1) * per_unit[1]
        ].all()
    ]
    # One task over the units still to write (as `dask.array.store` ends): one collection,
    # culled once to those units. (A Delayed per unit is culled once per unit: quadratic.)
    name = f"bigquant-written-{token}"
    graph = HighLevelGraph.from_collections(name, {name: (_units, keys)}, dependencies=[written])
    return Delayed(name, graph)


def _units(written: list) -> list:
    return written


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
