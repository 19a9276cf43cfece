"""Assign stage: the index of the nearest codebook colour for every pixel, chunk by chunk.

Nearest means smallest squared Euclidean distance, ties going to the lower
index. For integer images with an integer codebook the distances are computed
exactly (every term of ``|x|² - 2x·c + |c|²`` is an integer below 2**24 in
float32 for 8-bit data, below 2**53 in float64 otherwise), so the result is the
exact nearest colour; float32 images are compared in float64.
"""

from __future__ import annotations

import dask.array as da
from dask.base import tokenize
import numpy as np

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
    work = _work_dtype(pixels.dtype, codebook)
    cb = codebook.astype(work)
    cb_sq = np.einsum("kc,kc->k", cb, cb)
    n = len(pixels)
    labels = np.empty(n, dtype=np.int64)
    sq_dist = np.empty(n, dtype=np.float64)
    step = max(1, _MAX_DISTANCES // len(cb))
    for start in range(0, n, step):
        x = pixels[start : start + step].astype(work)
        d = cb_sq - 2 * (x @ cb.T)  # |x|² is the same for every colour: add it after argmin.
        idx = d.argmin(axis=1)
        labels[start : start + step] = idx
        best = d[np.arange(len(x)), idx].astype(np.float64)
        sq_dist[start : start + step] = best + np.einsum("nc,nc->n", x, x, dtype=np.float64)
    # Exact arithmetic can still round a tiny negative for float data.
    np.maximum(sq_dist, 0, out=sq_dist)
    return labels, sq_dist


def assign_block(block: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Labels of one ``(y, x, C)`` chunk, with its squared error sum and colour counts."""
    h, w, c = block.shape
    labels, sq_dist = nearest(block.reshape(-1, c), codebook)
    counts = np.bincount(labels, minlength=len(codebook))
    return labels.reshape(h, w).astype(label_dtype(len(codebook))), float(sq_dist.sum()), counts


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
    return da.map_blocks(
        _labels_block,
        data,
        codebook,
        drop_axis=2,
        dtype=label_dtype(len(codebook)),
        name="bigquant-assign-" + tokenize(data, codebook),
    )


def _labels_block(block: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    return assign_block(block, codebook)[0]
