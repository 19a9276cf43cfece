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
    The overviews of a palette TIFF (`bigquant.export`, by `pyramid_rows`).
    They are pages of the same colour map, read by GDAL and libtiff as they
    read the full page; every f-th pixel costs nothing to compute, which
    matters for ``decompress``' speed.
block means (labels → colours)
    The overviews of an RGB (or grey) TIFF (`pyramid_rows`, every power of
    two in one pass) and the previews (`block_means`, any factor,
    `bigquant.render`): the mean colour of each f × f block, which is what a
    viewer shows when it zooms out over true colours (less aliasing than any
    pick of one pixel). Pixels without data are left out of the means.
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
    means = _means(labels, weighted_codebook(codebook, skip), f)
    share = means[:, :, -1:]
    colors = convert(
        np.where(share > 0, means[:, :, :-1] / np.maximum(share, 1e-12), codebook[skip])
    )
    if not opacity:
        return colors
    top = np.iinfo(colors.dtype).max
    return np.concatenate([colors, np.rint(share * top).astype(colors.dtype)], axis=2)


def weighted_codebook(codebook: np.ndarray, skip: int | None) -> np.ndarray:
    """``(K, C + 1)`` float64: each colour, then 1 for a pixel with data; the ``skip``
    (nodata) label's row all 0. Summed over a block, its colours' sum and pixel count
    leave nodata out (`block_means_chunk`, `pyramid_rows`'s ``weighted``)."""
    weights = np.ones((len(codebook), 1))
    if skip is not None:
        weights[skip] = 0
    return np.hstack([np.where(weights > 0, codebook, 0), weights])


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


def pyramid_rows(
    labels: np.ndarray,
    top: int,
    height: int,
    tiles: list,
    filled: np.ndarray,
    *,
    weighted: np.ndarray | None = None,
    fill: np.ndarray | None = None,
    dtype=None,
    sums: list | None = None,
) -> None:
    """Add a row of tiles' labels to every overview level at once, in one pass.

    ``labels`` are rows ``top, top + 1, ...`` (at most one row of tiles, from
    the top of one) of an image ``height`` rows high. Level n (from 1) is the image shrunk 2ⁿ times; its row ``r`` goes
    into ``tiles[n - 1]``, a ``(m, T, T, C)`` array of tiles in file order, at
    row ``filled[n - 1]`` of the tiles, which then counts one more. The caller
    compresses a row of tiles once full and gives fresh ones.

    Without ``weighted``, a level holds the labels of every 2ⁿ-th pixel (a
    palette TIFF's overviews). With it, the mean colour of each 2ⁿ × 2ⁿ block
    (partial at the bottom and right edges), rounded half to even and
    clipped to an integer ``dtype`` (`bigquant.kernels.color.in_dtype`'s rule)
    or cast to a float one: ``weighted`` is the ``(K, C + 1)`` float64
    codebook with a last column of 1 for a pixel with data and 0 (and zero
    colours) for nodata, ``fill`` the colour of a block of nodata only, and
    ``sums`` the levels' ``(w, C + 1)`` float64 rows of sums, zeros at first,
    kept by the caller from one call to the next. A level's row of sums is
    the sum of the two rows below it, so every level sums exactly the pixels
    of its blocks (integer colours exactly, in any order: float64 holds
    integers to 2⁵³; float colours up to the order of additions) without
    reading the labels again, and each row is made while it is in cache.
    """
    from numba.typed import List

    if not tiles:
        return
    size = tiles[0].shape[2]
    # A row of tiles at a time, from a row of tiles' top: no level then gets more rows than
    # its row of tiles has room for, once the caller emptied the full ones.
    if top % size or len(labels) > size or any(n >= size for n in filled):
        raise ValueError(f"pyramid_rows takes a row of {size}-pixel tiles at a time")
    if weighted is None:
        _samples_compiled()(labels, top, List(tiles), filled)
        return
    dtype = np.dtype(dtype)
    rounded = np.issubdtype(dtype, np.integer)
    info = np.iinfo(dtype) if rounded else np.finfo(dtype)
    _means_compiled()(
        labels, top, height, weighted, np.asarray(fill, np.float64), rounded,
        float(info.min), float(info.max), List(sums), List(tiles), filled,
    )  # fmt: skip


@functools.cache
def _samples_compiled():
    import numba

    @numba.njit(cache=True, nogil=True)
    def samples(labels, top, tiles, filled):
        rows, cols = labels.shape
        for y in range(rows):
            for n in range(len(tiles)):
                f = 2 << n
                if (top + y) % f:
                    break  # not a row of this level, nor of any smaller one
                level, row = tiles[n], filled[n]
                size = level.shape[2]
                for x in range(0, cols, f):
                    level[x // f // size, row, x // f % size, 0] = labels[y, x]
                filled[n] = row + 1

    return samples


@functools.cache
def _means_compiled():
    import numba

    @numba.njit(cache=True, nogil=True)
    def means(labels, top, height, weighted, fill, rounded, low, high, sums, tiles, filled):
        rows, cols = labels.shape
        n_sums = weighted.shape[1]  # the colours, then the count
        first = sums[0]
        for y in range(rows):
            if n_sums == 4:  # RGB and the count spelled out: 0.8 against 1.3 ns a pixel
                for x in range(cols):
                    label = labels[y, x]
                    first[x >> 1, 0] += weighted[label, 0]
                    first[x >> 1, 1] += weighted[label, 1]
                    first[x >> 1, 2] += weighted[label, 2]
                    first[x >> 1, 3] += weighted[label, 3]
            else:
                for x in range(cols):
                    label = labels[y, x]
                    for k in range(n_sums):
                        first[x >> 1, k] += weighted[label, k]
            last = top + y == height - 1
            row = top + y  # the row of the level below that was just added
            n = 0
            # A level's row is complete after its second row below, or the image's last.
            while n < len(tiles) and (row % 2 == 1 or last):
                level, level_sums, out = tiles[n], sums[n], filled[n]
                size = level.shape[2]
                for t in range(level.shape[0]):
                    for x in range(t * size, min(t * size + size, level_sums.shape[0])):
                        count = level_sums[x, n_sums - 1]
                        for k in range(n_sums - 1):
                            v = level_sums[x, k] / count if count > 0 else fill[k]
                            if rounded:
                                v = min(max(np.rint(v), low), high)
                            level[t, out, x - t * size, k] = v
                filled[n] = out + 1
                if n + 1 < len(tiles):
                    above = sums[n + 1]
                    for x in range(level_sums.shape[0]):
                        for k in range(n_sums):
                            above[x >> 1, k] += level_sums[x, k]
                level_sums[:] = 0.0
                row >>= 1  # this level's row just completed
                n += 1

    return means
