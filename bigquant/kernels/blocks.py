"""Sums of colours over blocks of labels: the kernel of previews and RGB overviews."""

from __future__ import annotations

import functools

import numpy as np


def block_sums(labels: np.ndarray, codebook: np.ndarray, f: int) -> np.ndarray:
    """``codebook[labels]`` summed over every ``f × f`` block of a 2-D label array.

    Returns float64 ``(ceil(Y / f), ceil(X / f), C)``; partial blocks at the
    bottom and right edges sum the pixels they have. One compiled pass: 16 s
    to 2 s per overview level of a 1-gigapixel RGB image against numpy's
    lookup and ``reduceat`` of float temporaries (labels are checked against
    the codebook by the caller).
    """
    rows, cols = labels.shape
    out = np.zeros((-(-rows // f), -(-cols // f), codebook.shape[1]))
    _compiled()(labels, np.ascontiguousarray(codebook, dtype=np.float64), f, out)
    return out


@functools.cache
def _compiled():
    import numba

    @numba.njit(cache=True, nogil=True)
    def add_blocks(labels, codebook, f, out):
        # Each pixel's colour goes first into its column's sum over the block's rows, then
        # the columns into the block: added straight into its block, each pixel waited for
        # the addition before it. On a 2048² chunk of 256 RGB colours, 4.8 against 4.9 ns a
        # pixel at f = 2, 3.3 against 4.5 at 4, 2.4 against 4.3 at 16. Integer colours sum
        # exactly in either order.
        rows, cols = labels.shape
        n_channels = codebook.shape[1]
        columns = np.empty((cols, n_channels))
        for by in range(out.shape[0]):
            columns[:] = 0.0
            for y in range(by * f, min(by * f + f, rows)):
                for x in range(cols):
                    label = labels[y, x]
                    for k in range(n_channels):
                        columns[x, k] += codebook[label, k]
            for bx in range(out.shape[1]):
                for x in range(bx * f, min(bx * f + f, cols)):
                    for k in range(n_channels):
                        out[by, bx, k] += columns[x, k]

    return add_blocks
