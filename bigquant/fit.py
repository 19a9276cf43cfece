"""Fit stage: a K-colour codebook from a pixel sample with dask-ml's parallel ``KMeans``.

dask-ml runs the Lloyd iterations wherever the sample's chunks live (threads,
processes or a cluster). Around it, bigquant fixes what dask-ml 2025.1 gets
wrong for images:

* init: k-means++ (scikit-learn) on a subsample, passed as an explicit array,
  instead of dask-ml's k-means|| (too few candidates, first one always ``X[0]``);
* tolerance: scaled by the sample's mean variance as scikit-learn does, since
  dask-ml compares it with the absolute squared centre shift;
* empty clusters, which dask-ml moves to the origin (black): re-seeded on the
  sample points farthest from their centre and refitted;
* fewer distinct colours than K: those colours, exactly, with no k-means at all.

With an explicit init and a fixed chunking of the sample the centres are
bit-identical on threads and on process clusters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import BigquantError
from .label import nearest
from .sample import DEFAULT_SAMPLE, sample_pixels

log = logging.getLogger("bigquant")

MAX_COLORS = 65536
DEFAULT_MAX_ITER = 100
DEFAULT_TOL = 1e-4
#: Rows per chunk of the sample handed to dask-ml: fixed, so results do not depend on workers.
SAMPLE_CHUNK = 1 << 16
#: Points k-means++ seeds from (it is O(points × K log K)).
_INIT_POINTS = 100_000
_REPAIR_ROUNDS = 3


@dataclass(frozen=True)
class FitResult:
    """A fitted codebook.

    Attributes
    ----------
    codebook : ndarray, shape (K, C)
        Colours in the image's dtype (rounded and clipped for integer images).
    n_iter : int
        Lloyd iterations run (0 when the image had at most K distinct colours).
    n_samples : int
        Pixels in the sample the codebook was fitted on.
    """

    codebook: np.ndarray
    n_iter: int
    n_samples: int


def check_n_colors(n_colors: int) -> None:
    if not 1 <= n_colors <= MAX_COLORS:
        raise BigquantError(f"--colors must be between 1 and {MAX_COLORS}, not {n_colors}")


def fit_codebook(
    data,
    n_colors: int,
    *,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
) -> FitResult:
    """Fit a ``n_colors`` codebook to a ``(Y, X, C)`` dask array.

    Draws a uniform sample of ``sample_size`` pixels (reading every chunk
    that holds one: usually the whole image once) and runs k-means on it.

    Parameters
    ----------
    data : dask.array.Array, shape (Y, X, C) or (Y, X)
    n_colors : int
        K, from 1 to 65536.
    sample_size : int
        Pixels to sample; the whole image when it has fewer.
    seed : int
        Seeds the sample and the k-means++ init: same seed, same codebook.
    max_iter : int
        Bound on Lloyd iterations.
    tol : float
        Relative tolerance on the centre shift, as in scikit-learn.
    """
    check_n_colors(n_colors)
    if max_iter < 1:
        raise BigquantError(f"max_iter must be at least 1, not {max_iter}")
    if data.ndim == 2:
        data = data[:, :, None]
    sample = sample_pixels(data, sample_size, seed)
    return fit_sample(sample, n_colors, seed=seed, max_iter=max_iter, tol=tol)


def fit_sample(
    sample: np.ndarray,
    n_colors: int,
    *,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
) -> FitResult:
    """Fit a codebook to an in-memory ``(n, C)`` pixel sample (see `fit_codebook`)."""
    check_n_colors(n_colors)
    if not np.issubdtype(sample.dtype, np.integer):
        bad = ~np.isfinite(sample).all(axis=1)
        if bad.any():
            log.warning("ignoring %d sampled pixels with NaN or infinite values", int(bad.sum()))
            sample = sample[~bad]
    if len(sample) == 0:
        raise BigquantError("the image has no finite pixel values to fit colours to")
    distinct = np.unique(sample, axis=0)
    if len(distinct) <= n_colors:
        if len(distinct) < n_colors:
            log.warning(
                "the image has only %d distinct colours (%d requested): the codebook is exactly those",
                len(distinct),
                n_colors,
            )
        return FitResult(distinct, 0, len(sample))

    x = sample.astype(np.float64)
    rng = np.random.RandomState(seed)
    init = _kmeans_plusplus(x, n_colors, rng)
    abs_tol = tol * float(x.var(axis=0).mean())
    centers, n_iter = _lloyd(x, init, seed, max_iter, abs_tol)
    for _ in range(_REPAIR_ROUNDS):
        labels, sq_dist = nearest(x, centers)
        empty = np.flatnonzero(np.bincount(labels, minlength=n_colors) == 0)
        if not len(empty):
            break
        log.info("re-seeding %d empty clusters", len(empty))
        centers = centers.copy()
        centers[empty] = x[np.argsort(-sq_dist, kind="stable")[: len(empty)]]
        centers, more = _lloyd(x, centers, seed, max_iter, abs_tol)
        n_iter += more
    return FitResult(_finish(centers, sample), n_iter, len(sample))


def _kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    from sklearn.cluster import kmeans_plusplus

    if len(x) > _INIT_POINTS:
        x = x[np.sort(rng.choice(len(x), _INIT_POINTS, replace=False))]
    centers, _ = kmeans_plusplus(x, k, random_state=rng)
    return centers


def _lloyd(x: np.ndarray, init: np.ndarray, seed: int, max_iter: int, tol: float):
    import dask.array as da
    from dask_ml.cluster import KMeans

    km = KMeans(
        n_clusters=len(init), init=init, n_init=1, max_iter=max_iter, tol=tol, random_state=seed
    )
    km.fit(da.from_array(x, chunks=(SAMPLE_CHUNK, x.shape[1])))
    return np.asarray(km.cluster_centers_, dtype=np.float64), int(km.n_iter_)


def _finish(centers: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Centres in the sample's dtype, without duplicates or colours no sampled pixel uses."""
    dtype = sample.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        colors = np.clip(np.rint(centers), info.min, info.max).astype(dtype)
    else:
        colors = centers.astype(dtype)
    _, first = np.unique(colors, axis=0, return_index=True)
    colors = colors[np.sort(first)]
    labels, _ = nearest(sample, colors)
    used = np.bincount(labels, minlength=len(colors)) > 0
    if not used.all():
        log.info("dropping %d codebook colours no sampled pixel is nearest to", int((~used).sum()))
    return colors[used]
