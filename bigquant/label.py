"""Label (assign) stage: the index of the nearest codebook colour for every pixel, chunk by chunk.

Nearest means smallest squared Euclidean distance, ties going to the lower
index. For integer images with an integer codebook the distances are computed
exactly (every term of ``|x|² - 2x·c + |c|²`` is an integer below 2**24 in
float32 for 8-bit data, below 2**53 in float64 otherwise), so the result is the
exact nearest colour; float32 images are compared in float64.
"""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
from dask.base import tokenize

from .errors import BigquantError

#: Bound on the pixels × colours distance matrix of one step (entries), ~32 MiB in float64.
_MAX_DISTANCES = 1 << 22


def label_dtype(n_colors: int) -> np.dtype:
    """``uint8`` for up to 256 colours, else ``uint16``."""
    return np.dtype(np.uint8 if n_colors <= 256 else np.uint16)


def _work_dtype(pixel_dtype: np.dtype, codebook: np.ndarray) -> np.dtype:
    n_channels = codebook.shape[1]
    # Sums of up to 4·C products of values ≤ 255 stay exact in float32 while below 2**24.
    if pixel_dtype == np.uint8 and 4 * n_channels * 255 * 255 < 2**24:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _steps(pixels: np.ndarray, codebook: np.ndarray):
    """Yield ``(slice, labels, squared distances)`` for bounded batches of pixels."""
    work = _work_dtype(pixels.dtype, codebook)
    cb = codebook.astype(work)
    cb_sq = np.einsum("kc,kc->k", cb, cb)
    step = max(1, _MAX_DISTANCES // len(cb))
    for start in range(0, len(pixels), step):
        x = pixels[start : start + step].astype(work)
        d = cb_sq - 2 * (x @ cb.T)  # |x|² is the same for every colour: add it after argmin.
        idx = d.argmin(axis=1)
        best = d[np.arange(len(x)), idx].astype(np.float64)
        # Exact for integers; for float data, rounding can dip a hair below zero.
        sq = np.maximum(best + np.einsum("nc,nc->n", x, x, dtype=np.float64), 0)
        yield slice(start, start + len(x)), idx, sq


def nearest(pixels: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codebook row for each pixel.

    Parameters
    ----------
    pixels : ndarray, shape (n, C)
    codebook : ndarray, shape (K, C)

    Returns
    -------
    labels : ndarray of int64, shape (n,)
    sq_dist : ndarray of float64, shape (n,)
        Squared distance of each pixel to its codebook colour.
    """
    labels = np.empty(len(pixels), dtype=np.int64)
    sq_dist = np.empty(len(pixels), dtype=np.float64)
    for sl, idx, sq in _steps(pixels, codebook):
        labels[sl] = idx
        sq_dist[sl] = sq
    return labels, sq_dist


# -- colour table: every 8-bit colour's label, for assignment by lookup ------------------------

#: Side of the colour cubes the table is filled by (16³ colours per cube).
_CELL = 16
#: Pixels looked up at a time (bounds the index temporaries).
_TABLE_STEP = 1 << 18
#: The most recent codebook's tables, keyed by codebook.
_tables: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_tables_lock = threading.Lock()


def table_pays(n_pixels: int, n_colors: int, n_channels: int, dtype: np.dtype) -> bool:
    """Whether labelling by colour table beats direct distances for this image.

    The table covers all 2**(8C) colours of 8-bit images with up to 3 channels;
    filling it costs about as much as labelling a few million pixels directly.
    Both ways give identical labels.
    """
    return dtype == np.uint8 and n_channels <= 3 and n_pixels * n_colors >= 1 << 28


def color_table(codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label and squared error of every 8-bit colour, as flat tables.

    Index ``(r << 16) | (g << 8) | b`` (for three channels; likewise for one or
    two). Exact and tie-breaking like `nearest`. The colour cube is filled in
    cubes of 16³ colours: only codebook colours that can be nearest to some
    point of a cube (their distance to the cube's box is at most the smallest
    farthest distance of any colour to the box) are compared there. Cached per
    process: 16 MiB of labels and 64 MiB of errors for RGB.
    """
    key = (codebook.shape, codebook.tobytes())
    with _tables_lock:
        tables = _tables.get(key)
        if tables is None:
            _tables.clear()  # 80 MiB each for RGB: keep only the codebook in use
            tables = _tables[key] = _fill_table(codebook)
    return tables


def _fill_table(codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cb = codebook.astype(np.int64)
    n_channels = cb.shape[1]
    cbf = codebook.astype(np.float32)  # exact here: integers below 2**24 throughout
    cb_sq = np.einsum("kc,kc->k", cbf, cbf)
    labels = np.empty((256,) * n_channels, label_dtype(len(cb)))
    errors = np.empty((256,) * n_channels, np.uint32)
    offsets = np.indices((_CELL,) * n_channels).reshape(n_channels, -1).T
    rows = np.arange(len(offsets))
    for cell in np.ndindex(*(256 // _CELL,) * n_channels):
        lo = np.array(cell) * _CELL
        hi = lo + _CELL - 1
        nearest_sq = ((np.maximum(lo - cb, 0) + np.maximum(cb - hi, 0)) ** 2).sum(axis=1)
        farthest_sq = (np.maximum(cb - lo, hi - cb) ** 2).sum(axis=1)
        cand = np.flatnonzero(nearest_sq <= farthest_sq.min())
        pts = (lo + offsets).astype(np.float32)
        d = cb_sq[cand] - 2 * (pts @ cbf[cand].T)
        best = d.argmin(axis=1)
        region = tuple(slice(a, a + _CELL) for a in lo)
        labels[region] = cand[best].reshape((_CELL,) * n_channels)
        sq = d[rows, best] + np.einsum("nc,nc->n", pts, pts)
        errors[region] = sq.astype(np.uint32).reshape((_CELL,) * n_channels)
    return labels.reshape(-1), errors.reshape(-1)


def assign_block(
    block: np.ndarray, codebook: np.ndarray, use_table: bool = False
) -> tuple[np.ndarray, float, np.ndarray]:
    """Labels of one ``(y, x, C)`` chunk, with its squared error sum and colour counts."""
    h, w, c = block.shape
    pixels = block.reshape(-1, c)
    labels = np.empty(len(pixels), label_dtype(len(codebook)))
    counts = np.zeros(len(codebook), np.int64)
    sse = 0.0
    if use_table:
        for start in range(0, len(pixels), _TABLE_STEP):
            sl = slice(start, start + _TABLE_STEP)
            labels[sl], sq = table_lookup(pixels[sl], codebook)
            sse += float(sq.sum(dtype=np.uint64))
            counts += np.bincount(labels[sl], minlength=len(codebook))
    else:
        for sl, idx, sq in _steps(pixels, codebook):
            labels[sl] = idx
            sse += float(sq.sum())
            counts += np.bincount(idx, minlength=len(codebook))
    return labels.reshape(h, w), sse, counts


def table_lookup(pixels: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and squared errors of 8-bit ``(n, C)`` pixels, looked up in the colour table."""
    label_table, error_table = color_table(codebook)
    # Table index: (r << 16) | (g << 8) | b for RGB.
    packed = np.zeros(len(pixels), np.intp)
    for channel in range(pixels.shape[1]):
        packed <<= 8
        packed |= pixels[:, channel]
    return label_table[packed], error_table[packed]


def assign(data: da.Array, codebook: np.ndarray) -> da.Array:
    """Lazily label every pixel of a ``(Y, X, C)`` dask array with its nearest colour.

    Parameters
    ----------
    data : dask.array.Array, shape (Y, X, C)
    codebook : ndarray, shape (K, C)

    Returns
    -------
    dask.array.Array, shape (Y, X)
        ``uint8`` labels for K ≤ 256, ``uint16`` above; chunked like ``data``.
        Computing it reads the whole image once.
    """
    codebook = np.asarray(codebook)
    if data.ndim == 2:
        data = data[:, :, None]
    if codebook.ndim != 2 or codebook.shape[1] != data.shape[2]:
        raise ValueError(
            f"codebook of shape {codebook.shape} does not match {data.shape[2]} channels"
        )
    data = data.rechunk({2: -1})
    use_table = table_pays(data.shape[0] * data.shape[1], *codebook.shape, data.dtype)
    return da.map_blocks(
        _labels_block,
        data,
        codebook,
        use_table,
        drop_axis=2,
        dtype=label_dtype(len(codebook)),
        name="bigquant-assign-" + tokenize(data, codebook),
    )


def _labels_block(block: np.ndarray, codebook: np.ndarray, use_table: bool) -> np.ndarray:
    return assign_block(block, codebook, use_table)[0]


def apply_codebook(labels: da.Array, codebook: np.ndarray) -> da.Array:
    """Lazily ``codebook[labels]``: the quantized ``(Y, X, C)`` image of a label array.

    Each chunk refuses labels past the codebook's end with a `BigquantError`.
    """
    codebook = np.asarray(codebook)
    return labels.map_blocks(
        lookup,
        codebook,
        dtype=codebook.dtype,
        new_axis=2,
        chunks=(*labels.chunks, (codebook.shape[1],)),
    )


def lookup(labels: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``codebook[labels]``, refusing labels past the codebook's end."""
    return codebook[check_labels(labels, len(codebook))]


def check_labels(labels: np.ndarray, n_colors: int) -> np.ndarray:
    """``labels`` unchanged, or a `BigquantError` if one points past ``n_colors`` colours."""
    if labels.size and int(labels.max()) >= n_colors:
        raise BigquantError(
            f"corrupt store: label {int(labels.max())} points past the {n_colors}-colour codebook"
        )
    return labels
