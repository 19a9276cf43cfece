"""Sample stage: a uniform random sample of pixels, the same for a seed whatever the chunking.

The pixel positions are drawn on the client from the seed and the image shape
alone; each chunk task then gathers the positions that fall inside it, and the
gathered rows are put back in position order. Chunks holding no sampled pixel
are never read.
"""

from __future__ import annotations

import math

import dask
import numpy as np

from .errors import BigquantError

DEFAULT_SAMPLE = 1_000_000


def sample_positions(shape: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """Sorted flat (row-major) indices of ``n`` distinct pixels drawn uniformly.

    Depends on the image's ``(rows, columns)``, ``n`` and ``seed`` only.
    """
    total = math.prod(shape)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n, replace=False, shuffle=False).astype(np.int64))


def _gather(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return block[rows, cols]


def sample_pixels(data, n: int = DEFAULT_SAMPLE, seed: int = 0) -> np.ndarray:
    """Draw ``n`` pixels uniformly without replacement from a ``(Y, X, C)`` dask array.

    Reads only the chunks that hold sampled pixels (with the default sample of
    a million pixels that is usually every chunk, so this step decodes the
    whole image once). Returns a ``(min(n, Y*X), C)`` numpy array in the
    image's dtype, ordered by pixel position.
    """
    if n < 1:
        raise BigquantError(f"the sample size must be a positive number of pixels, not {n}")
    height, width = data.shape[:2]
    flat = sample_positions((height, width), n, seed)
    ys, xs = np.divmod(flat, width)
    row_edges = np.cumsum((0, *data.chunks[0]))
    col_edges = np.cumsum((0, *data.chunks[1]))
    block_row = np.searchsorted(row_edges, ys, side="right") - 1
    block_col = np.searchsorted(col_edges, xs, side="right") - 1
    block_id = block_row * len(data.chunks[1]) + block_col
    # Group positions by chunk; a stable sort keeps position order within a chunk.
    order = np.argsort(block_id, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block_id[order]) != 0])
    blocks = data.to_delayed()
    parts = []
    for start, stop in zip(starts, (*starts[1:], len(order)), strict=True):
        sel = order[start:stop]
        by, bx = block_row[sel[0]], block_col[sel[0]]
        parts.append(
            dask.delayed(_gather)(
                blocks[by, bx, 0], ys[sel] - row_edges[by], xs[sel] - col_edges[bx]
            )
        )
    gathered = np.concatenate(dask.compute(*parts))
    out = np.empty_like(gathered)
    out[order] = gathered
    return out
