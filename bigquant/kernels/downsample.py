"""Shrinking labels: the three rules, and which output uses which.

Every reduced image bigquant writes is made from the labels, never from the
source, and each output shrinks them by the rule its readers need:

``mode_2x2`` (labels → labels, halving)
    The OME-Zarr label pyramid (`bigquant.pyramid`) and the web tiles' lower
    levels (`bigquant.tiles`). A level must still be labels into the same
    codebook, so a 2 × 2 cell keeps its most frequent label: no colour is
    invented, a colour that fills most of a region keeps filling it, and the
    tiles' levels equal the pyramid's where a store has one.
``labels[::f, ::f]`` (labels → labels, any power of two)
    The overviews of a palette TIFF (`bigquant.export`). They are pages of
    the same colour map, read by GDAL and libtiff as they read the full page;
    every f-th pixel costs nothing to compute on each level straight from the
    full-resolution labels, which matters for ``decompress``' speed.
``block_means`` (labels → colours, any factor)
    The overviews of an RGB (or grey) TIFF and the previews
    (`bigquant.render`): the mean colour of each f × f block, which is what
    a viewer shows when it zooms out over true colours (less aliasing than
    any pick of one pixel). Pixels without data are left out of the means.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from .nearest import check_labels, lookup


def mode_2x2(block: np.ndarray) -> np.ndarray:
    """Halve a 2-D label block by the mode of each 2x2 cell (odd sides rounded up).

    With the cell's values sorted ``s0 <= s1 <= s2 <= s3``: ``s1`` if
    ``s1 == s2`` (a value held 3 or 4 times, or a pair in the middle), else
    ``s0`` if ``s0 == s1``, else ``s2`` if ``s2 == s3``, else the top-left value.
    A two-two tie goes to the smaller label. An odd last row or column is
    replicated first, so edge cells only ever hold their own pixels' values.
    One compiled, vectorized pass: under 1 ms on a 2048² chunk of uint8 labels
    (numpy's sort of four stacked planes: 54 ms), the cost of every label level
    and tile level.
    """
    h, w = block.shape
    out = np.empty((-(-h // 2), -(-w // 2)), block.dtype)
    if out.size:
        mode = _mode_compiled()
        mode(np.ascontiguousarray(block), out)
        if w % 2:  # an odd last column, replicated: a column pair of its own
            last = np.empty((out.shape[0], 1), block.dtype)
            mode(np.repeat(block[:, -1:], 2, axis=1), last)
            out[:, -1:] = last
    return out


@functools.cache
def _mode_compiled():
    import numba

    @numba.njit(cache=True, nogil=True)
    def mode(block, out):
        # The cells of whole column pairs only: with no bound to check in the row loop, and
        # no branch (a min/max sorting network, then selects), it vectorizes: 16x faster
        # than branching on each comparison. An odd last row is replicated.
        h, w = block.shape
        for i in range(out.shape[0]):
            top, bottom, row = block[2 * i], block[min(2 * i + 1, h - 1)], out[i]
            for j in range(w // 2):
                a, b, c, d = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
                lo1, hi1, lo2, hi2 = min(a, b), max(a, b), min(c, d), max(c, d)
                s0, s3 = min(lo1, lo2), max(hi1, hi2)
                m1, m2 = max(lo1, lo2), min(hi1, hi2)
                s1, s2 = min(m1, m2), max(m1, m2)
                found = s2 if s2 == s3 else a
                found = s0 if s0 == s1 else found
                row[j] = s1 if s1 == s2 else found

    return mode


def block_means(
    labels,
    codebook: np.ndarray,
    f: int,
    dtype,
    convert: Callable[[np.ndarray], np.ndarray],
    *,
    skip: int | None = None,
    opacity: bool = False,
) -> object:
    """The mean colour of every ``f × f`` block of ``codebook[labels]``, as ``convert`` makes it.

    A lazy ``(ceil(Y / f), ceil(X / f), C)`` dask array of ``dtype``, computed
    chunk by chunk from the ``labels`` dask array (partial blocks at the bottom
    and right edges are averaged over the pixels they have). ``convert`` turns
    float colour values into ``dtype``. Pixels labelled ``skip`` (nodata) are
    left out of the means; a block of nothing else is ``codebook[skip]``. With
    ``opacity`` (and ``skip``), a last channel holds each block's share of
    pixels with data, from 0 to the largest value of ``dtype`` (an integer type).
    The one function here that takes a dask array; it uses the array's own
    methods and imports no dask.
    """
    # Chunk sides that are multiples of f near the labels': no block straddles two chunks.
    labels = labels.rechunk(tuple(max(1, round(c / f)) * f for c in labels.chunksize))
    return labels.map_blocks(
        block_means_chunk,
        codebook,
        f,
        convert,
        skip,
        opacity,
        dtype=dtype,
        new_axis=2,
        chunks=(
            *(tuple(-(-c // f) for c in cs) for cs in labels.chunks),
            (codebook.shape[1] + opacity,),
        ),
    )


def block_means_chunk(
    labels: np.ndarray, codebook: np.ndarray, f: int, convert, skip: int | None, opacity: bool
) -> np.ndarray:
    """Mean colours of the ``f × f`` blocks of one chunk (partial ones at its end)."""
    if skip is None:
        if f == 1:  # every block one pixel: converting the codebook first is the same, faster
            return lookup(labels, convert(codebook))
        return convert(_means(labels, codebook, f))
    # Weighted: colours of the pixels with data, and a last column counting them.
    weights = np.ones((len(codebook), 1))
    weights[skip] = 0
    means = _means(labels, np.hstack([np.where(weights > 0, codebook, 0), weights]), f)
    share = means[:, :, -1:]
    colors = convert(
        np.where(share > 0, means[:, :, :-1] / np.maximum(share, 1e-12), codebook[skip])
    )
    if not opacity:
        return colors
    top = np.iinfo(colors.dtype).max
    return np.concatenate([colors, np.rint(share * top).astype(colors.dtype)], axis=2)


def _means(labels: np.ndarray, codebook: np.ndarray, f: int) -> np.ndarray:
    """Float means of ``codebook[labels]`` over the ``f × f`` blocks of one chunk."""
    rows, cols = labels.shape
    rows_in = np.minimum(f, rows - np.arange(0, rows, f))
    cols_in = np.minimum(f, cols - np.arange(0, cols, f))
    return (
        block_sums(check_labels(labels, len(codebook)), codebook, f)
        / np.outer(rows_in, cols_in)[:, :, None]
    )


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
