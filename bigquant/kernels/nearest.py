"""The nearest codebook colour of pixels: the kernel of the assign stage and of the fit.

Nearest means smallest squared Euclidean distance, ties going to the lower
index. Distances are compared in float64: for integer images up to 16 bits
with an integer codebook every term of ``|x|² - 2x·c + |c|²`` is an integer
below 2**53, so the result is the exact nearest colour.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import BigquantError
from .color import to_space

#: Past this many colours, nearest colours are found with a k-d tree.
_TREE_COLORS = 1024
#: Neighbours a k-d tree query returns, to break ties.
_TREE_TIES = 8


def label_dtype(n_colors: int) -> np.dtype:
    """``uint8`` for up to 256 colours, else ``uint16``."""
    return np.dtype(np.uint8 if n_colors <= 256 else np.uint16)


def nearest(
    pixels: np.ndarray, codebook: np.ndarray, space: str = "rgb"
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codebook row for each pixel.

    Parameters
    ----------
    pixels : ndarray, shape (n, C)
    codebook : ndarray, shape (K, C)
    space : {"rgb", "oklab", "lab"}
        Where distances are measured (see `bigquant.kernels.color`).

    Returns
    -------
    labels : ndarray of int64, shape (n,)
    sq_dist : ndarray of float64, shape (n,)
        Squared distance of each pixel to its codebook colour, in the pixels' own values.
    """
    labels = np.empty(len(pixels), dtype=np.int64)
    return labels, _nearest_into(pixels, codebook, space, labels)


def _nearest_into(
    pixels: np.ndarray, codebook: np.ndarray, space: str, labels: np.ndarray
) -> np.ndarray:
    """Write each pixel's nearest codebook row into ``labels``; return its squared distance
    to it, in the pixels' own values."""
    rgb = space == "rgb"
    cb = codebook.astype(np.float64) if rgb else to_space(codebook, space)
    if len(cb) <= _TREE_COLORS:
        # The pass's squared distances are in its input's values: the pixels', for rgb.
        sq = np.empty(len(pixels))
        if rgb:
            _nearest_pass()(pixels, *_centers(cb), labels, sq)
            return sq
        centers = _centers(cb)
        for start in range(0, len(pixels), _BATCH):  # bounds the converted pixels
            sl = slice(start, start + _BATCH)
            _nearest_pass()(to_space(pixels[sl], space), *centers, labels[sl], sq[sl])
        return sq_errors(pixels, codebook, labels)
    tree = _tree(cb)
    for start in range(0, len(pixels), _BATCH):  # bounds the converted pixels
        sl = slice(start, start + _BATCH)
        x = pixels[sl].astype(np.float64) if rgb else to_space(pixels[sl], space)
        # The few nearest, so that a tie still goes to the lowest index; the rare pixel
        # tied with all of them is compared with every colour.
        d, i = tree.query(x, k=_TREE_TIES)
        idx = np.where(d == d[:, :1], i, len(cb)).min(axis=1)
        for j in np.flatnonzero(d[:, -1] == d[:, 0]):
            idx[j] = ((cb - x[j]) ** 2).sum(axis=1).argmin()
        labels[sl] = idx
    return sq_errors(pixels, codebook, labels)


def _centers(codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float64 codebook as `_nearest_pass` takes it: ``-2 × codebook`` transposed, and
    each row's squared norm."""
    return np.ascontiguousarray(-2 * codebook.T), np.einsum("kc,kc->k", codebook, codebook)


@functools.cache
def _nearest_pass():
    """Compiled: each pixel's nearest colour, by comparing it with every colour.

    ``|c|² - 2x·c`` in float64, keeping the first smallest (the lowest
    index); exact for integer images up to 16 bits with an integer codebook.
    Each pixel's distances to all colours go to a small buffer first, in loops
    the compiler vectorises, then the argmin: 3-6x faster than NumPy's matrix
    product and argmin over batches (2048² pixels and 256 colours), 4-5x faster
    than scikit-learn's ``pairwise_distances_argmin_min``.
    """
    import numba

    @numba.njit(cache=True, nogil=True)
    def nearest_pass(pixels, minus_2ct, sq_norms, labels, sq):
        n, n_channels = pixels.shape
        dist = np.empty(len(sq_norms))
        for i in range(n):
            dist[:] = sq_norms
            for k in range(n_channels):
                value = np.float64(pixels[i, k])
                for j in range(len(dist)):
                    dist[j] += value * minus_2ct[k, j]
            best = 0
            for j in range(1, len(dist)):
                if dist[j] < dist[best]:
                    best = j
            labels[i] = best
            total = 0.0
            for k in range(n_channels):
                # The colour is exactly -0.5 times its row of minus_2ct.
                d = np.float64(pixels[i, k]) + 0.5 * minus_2ct[k, best]
                total += d * d
            sq[i] = total

    return nearest_pass


def _tree(codebook: np.ndarray):
    """A k-d tree of the codebook: past `_TREE_COLORS`, cheaper than every distance."""
    from scipy.spatial import cKDTree

    # float64 distances of integer values below 2**16 are exact: ties stay ties.
    return cKDTree(codebook.astype(np.float64))


def nodata_mask(block: np.ndarray, nodata: float) -> np.ndarray:
    """``(y, x)`` True where a ``(y, x, C)`` block holds no data: every channel ``nodata``,
    or (floats) any NaN."""
    if block.dtype.kind != "f":
        return (block == nodata).all(axis=2)
    mask = np.isnan(block).any(axis=2)
    if not np.isnan(nodata):
        mask |= (block == nodata).all(axis=2)
    return mask


def sq_errors(pixels: np.ndarray, codebook: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared distance of each pixel to its codebook colour, in float64."""
    diff = pixels.astype(np.float64) - codebook[labels].astype(np.float64)
    return np.einsum("nc,nc->n", diff, diff)


def score(pixels: np.ndarray, codebook: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Squared error sum and colour counts of ``(n, C)`` pixels with their labels."""
    sse = 0.0
    for start in range(0, len(pixels), _BATCH):
        sl = slice(start, start + _BATCH)
        sse += float(sq_errors(pixels[sl], codebook, labels[sl]).sum())
    return sse, np.bincount(labels, minlength=len(codebook)).astype(np.int64)


# -- colour table: every 8-bit colour's label, for assignment by lookup ------------------------

#: Side of the colour cubes a perceptual-space table is filled by (16³ colours per cube).
_CELL = 16
#: Most colours × candidates compared in one box of an rgb table (smaller boxes keep fewer).
_LEAF_DISTANCES = 1 << 20
#: Threads filling a colour table.
_FILL_THREADS = min(8, os.cpu_count() or 1)
#: Pixels compared at a time by the k-d tree and by `score` (bounds their temporaries).
_BATCH = 1 << 18
#: The most recent codebook's table, keyed by codebook and space.
_tables: dict[tuple, np.ndarray] = {}
_tables_lock = threading.Lock()


def table_pays(n_pixels: int, n_colors: int, n_channels: int, dtype: np.dtype) -> bool:
    """Whether labelling by colour table beats direct distances for this image.

    The table covers all 2**(8C) colours of 8-bit images with up to 3 channels;
    filling it costs about as much as labelling a few million pixels directly.
    Both ways give the same labels (bar float ties in perceptual spaces).
    """
    return has_table(n_channels, dtype) and n_pixels * n_colors >= 1 << 28


def has_table(n_channels: int, dtype: np.dtype) -> bool:
    """Whether a colour table can cover the image: 8-bit values, up to 3 channels."""
    return np.dtype(dtype) == np.uint8 and n_channels <= 3


def color_table(codebook: np.ndarray, space: str = "rgb") -> np.ndarray:
    """The label of every 8-bit colour, as a flat table.

    Index ``(r << 16) | (g << 8) | b`` (for three channels; likewise for one or
    two). Exact and tie-breaking like `nearest`. The colour cube is filled in
    cubes of 16³ colours: only codebook colours that can be nearest to some
    point of a cube (their distance to the cube's bounding box in ``space`` is
    at most the smallest farthest distance of any colour to that box) are
    compared there. Cached per process: 16 MiB for RGB (32 MiB past 256
    colours). Errors are not tabulated: `label_block` computes them from the
    codebook in the same compiled pass, for less than a second lookup costs.
    """
    key = _table_key(codebook, space)
    with _tables_lock:
        table = _tables.get(key)
        if table is None:
            _tables.clear()  # 16 MiB each for RGB: keep only the codebook in use
            table = _tables[key] = _fill_table(codebook, space)
    return table


def keep_table(codebook: np.ndarray, space: str, table: np.ndarray) -> None:
    """Cache ``table``, made by `color_table` in another process, as this process's table of
    ``codebook`` and ``space``: a cluster's workers get it instead of each filling their own."""
    key = _table_key(codebook, space)
    with _tables_lock:
        if key not in _tables:
            _tables.clear()
            _tables[key] = table


def _table_key(codebook: np.ndarray, space: str) -> tuple:
    return codebook.shape, codebook.tobytes(), space


def _fill_table(codebook: np.ndarray, space: str) -> np.ndarray:
    n_channels = codebook.shape[1]
    cb = codebook.astype(np.int64)
    cb_sq = np.einsum("kc,kc->k", cb, cb)
    rgb = space == "rgb"
    if not rgb:
        work = to_space(codebook, space)
        work_sq = np.einsum("kc,kc->k", work, work)
    labels = np.empty((256,) * n_channels, label_dtype(len(cb)))
    flat = labels.reshape(-1)

    def candidates(box_lo, box_hi, points, cand, slack=0.0):
        """The colours of ``cand`` that can be nearest to some point of the box."""
        near = ((np.maximum(box_lo - points, 0) + np.maximum(points - box_hi, 0)) ** 2).sum(1)
        far = (np.maximum(points - box_lo, box_hi - points) ** 2).sum(axis=1)
        return cand[near <= far.min() * (1 + slack)]

    def fill(lo: np.ndarray, size: int, cand: np.ndarray) -> None:
        """A cube of a perceptual-space table: distances as one matrix product."""
        colors = lo + np.indices((size,) * n_channels).reshape(n_channels, -1).T
        # Boxes of colours are not boxes in a perceptual space: bound the converted points.
        pts = to_space(colors.astype(np.uint8), space)
        cand = candidates(pts.min(axis=0), pts.max(axis=0), work[cand], cand, 1e-9)
        d = work_sq[cand] - 2 * (pts @ work[cand].T)
        best = cand[d.argmin(axis=1)]
        region = tuple(slice(a, a + size) for a in lo)
        labels[region] = best.reshape((size,) * n_channels)

    def split(lo: np.ndarray, size: int, cand: np.ndarray) -> None:
        # Halve the box while it would compare many pairs: each half keeps only the
        # colours that can be nearest in it, so large codebooks are not scanned per cell.
        cand = candidates(lo, lo + size - 1, cb[cand], cand)
        if size <= 4 or size**n_channels * len(cand) <= _LEAF_DISTANCES:
            _box_pass()(lo, size, cand, cb[cand], cb_sq[cand], flat)
            return
        half = size // 2
        for corner in np.ndindex(*(2,) * n_channels):
            split(lo + half * np.array(corner), half, cand)

    everything = np.arange(len(cb))
    if rgb:  # the 2**C half-size cubes
        parts = [(128 * np.array(c), 128) for c in np.ndindex(*(2,) * n_channels)]
        work_on = split
    else:
        parts = [(np.array(c) * _CELL, _CELL) for c in np.ndindex(*(256 // _CELL,) * n_channels)]
        work_on = fill
    # The parts are independent: fill them on threads (the compiled pass and numpy release
    # the GIL), with single-threaded BLAS for the perceptual spaces' matrix products, which
    # would otherwise oversubscribe the cores.
    with threadpool_limits(1), ThreadPoolExecutor(_FILL_THREADS) as pool:
        list(pool.map(lambda part: work_on(*part, everything), parts))
    return labels.reshape(-1)


@functools.cache
def _box_pass():
    """Compiled: the label of every colour of one box of an rgb colour table.

    Each colour is compared with the box's candidates in exact integer
    arithmetic, ``|c|² - 2x·c``, keeping the first smallest (the lowest
    index: candidates come in index order), as `nearest` does. It replaced a
    float32 matrix product and argmin per box, which wrote and read back 269
    million distances for the 256 colours of the benchmark mosaic.
    """
    import numba

    @numba.njit(cache=True, nogil=True)
    def box_pass(lo, size, cand, colors, colors_sq, labels):
        n_channels = colors.shape[1]
        # Spelled out for 3 channels: the general loop below took 0.75-0.90 s for the
        # benchmark mosaic's table against 0.45-0.48 s for this one.
        if n_channels == 3:
            for r in range(lo[0], lo[0] + size):
                for g in range(lo[1], lo[1] + size):
                    for b in range(lo[2], lo[2] + size):
                        best, best_d = 0, np.iinfo(np.int64).max
                        for m in range(len(cand)):
                            dot = r * colors[m, 0] + g * colors[m, 1] + b * colors[m, 2]
                            d = colors_sq[m] - 2 * dot
                            if d < best_d:
                                best, best_d = m, d
                        labels[(r << 16) | (g << 8) | b] = cand[best]
            return
        point = np.empty(n_channels, np.int64)
        for j in range(size**n_channels):
            index, rest = np.int64(0), j
            for k in range(n_channels - 1, -1, -1):  # the last channel varies fastest
                point[k] = lo[k] + rest % size
                rest //= size
                index |= point[k] << (8 * (n_channels - 1 - k))
            best, best_d = 0, np.iinfo(np.int64).max
            for m in range(len(cand)):
                dot = np.int64(0)
                for k in range(n_channels):
                    dot += point[k] * colors[m, k]
                d = colors_sq[m] - 2 * dot
                if d < best_d:
                    best, best_d = m, d
            labels[index] = cand[best]

    return box_pass


def label_block(
    block: np.ndarray, codebook: np.ndarray, *, space: str = "rgb", use_table: bool = False
) -> tuple[np.ndarray, float, np.ndarray]:
    """Labels of one ``(y, x, C)`` chunk, with its squared error sum and colour counts."""
    h, w, c = block.shape
    pixels = block.reshape(-1, c)
    labels = np.empty(len(pixels), label_dtype(len(codebook)))
    if not use_table:
        sq = _nearest_into(pixels, codebook, space, labels)
        counts = np.bincount(labels, minlength=len(codebook)).astype(np.int64)
        return labels.reshape(h, w), float(sq.sum()), counts
    counts = np.zeros(len(codebook), np.int64)
    table = color_table(codebook, space)
    sse = _lookup_pass()(pixels, table, codebook.astype(np.int64), labels, counts)
    return labels.reshape(h, w), float(sse), counts


def table_lookup(pixels: np.ndarray, codebook: np.ndarray, space: str = "rgb") -> np.ndarray:
    """Labels of 8-bit ``(n, C)`` pixels, looked up in the colour table."""
    # Table index: (r << 16) | (g << 8) | b for RGB.
    packed = np.zeros(len(pixels), np.intp)
    for channel in range(pixels.shape[1]):
        packed <<= 8
        packed |= pixels[:, channel]
    return color_table(codebook, space)[packed]


@functools.cache
def _lookup_pass():
    """Compiled passes over 8-bit pixels: label, squared error and count.

    numba, compiled on first use and cached on disk. Two loops, not one: the
    first only gathers labels from the 16 MiB table, and since each of those
    loads is independent of the one before, the CPU keeps several cache misses
    in flight; the second sums errors and counts from the small codebook. On
    a 2048² chunk of the benchmark mosaic that is 5.5 ns a pixel against 22.8
    for the same work in one loop, where each miss waited for the last pixel's
    count and error (in numpy: four passes and their temporaries).
    """
    import numba

    @numba.njit(cache=True, nogil=True)
    def lookup_pass(pixels, table, codebook, labels, counts):
        n, n_channels = pixels.shape
        if n_channels == 3:  # spelled out: a loop over channels here costs 3x (measured)
            for i in range(n):
                r, g, b = np.int64(pixels[i, 0]), np.int64(pixels[i, 1]), np.int64(pixels[i, 2])
                labels[i] = table[(r << 16) | (g << 8) | b]
        else:
            for i in range(n):
                index = np.int64(0)
                for k in range(n_channels):
                    index = (index << 8) | np.int64(pixels[i, k])
                labels[i] = table[index]
        sse = 0
        for i in range(n):
            label = labels[i]
            counts[label] += 1
            for k in range(n_channels):
                d = np.int64(pixels[i, k]) - codebook[label, k]
                sse += d * d
        return sse

    return lookup_pass


def lookup(labels: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``codebook[labels]`` for a ``(K, C)`` codebook, refusing labels past its end."""
    labels = check_labels(labels, len(codebook))
    # Each colour taken as one opaque item of C values: 4.5 ns a pixel against 13 for
    # numpy's row indexing (256 RGB colours, a 2048² chunk).
    rows = np.ascontiguousarray(codebook)
    items = rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).ravel()
    return np.take(items, labels).view(rows.dtype).reshape(*labels.shape, rows.shape[1])


def check_labels(labels: np.ndarray, n_colors: int) -> np.ndarray:
    """``labels`` unchanged, or a `BigquantError` if one points past ``n_colors`` colours."""
    if labels.size and int(labels.max()) >= n_colors:
        raise BigquantError(
            f"corrupt store: label {int(labels.max())} points past the {n_colors}-colour codebook"
        )
    return labels


def lookup_into_tiles(labels: np.ndarray, codebook: np.ndarray, tiles: np.ndarray, row: int):
    """``codebook[labels]`` written into a row of TIFF tiles: ``tiles[x // T, row + y, x % T]``.

    ``tiles`` is a ``(n, T, T, C)`` array of tiles in file order, so each is
    contiguous for its encoder without being cut out of an image band (one
    pass: 0.9 ns a pixel, on 4096 rows of the 1 GP benchmark mosaic's labels,
    against 6.0 for `lookup` and copying each tile out of its band).
    Labels are checked against the codebook by the caller.
    """
    _lookup_tiles_compiled()(labels, np.ascontiguousarray(codebook), tiles, row)


@functools.cache
def _lookup_tiles_compiled():
    import numba

    @numba.njit(cache=True, nogil=True)
    def lookup_tiles(labels, codebook, tiles, row):
        rows, cols = labels.shape
        size, n_channels = tiles.shape[2], codebook.shape[1]
        for y in range(rows):
            for t in range(tiles.shape[0]):
                start = t * size
                for x in range(start, min(start + size, cols)):
                    label = labels[y, x]
                    if n_channels == 3:  # spelled out, as in lookup_pass
                        tiles[t, row + y, x - start, 0] = codebook[label, 0]
                        tiles[t, row + y, x - start, 1] = codebook[label, 1]
                        tiles[t, row + y, x - start, 2] = codebook[label, 2]
                    else:
                        for k in range(n_channels):
                            tiles[t, row + y, x - start, k] = codebook[label, k]

    return lookup_tiles
