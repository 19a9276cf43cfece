"""Fit stage: a K-colour codebook from a pixel sample with dask-ml's parallel ``KMeans``.

dask-ml runs the Lloyd iterations in this process, on its threads (or on the
local scheduler set with ``dask.config``, such as "synchronous" for debugging),
even when a cluster is in use: the sample is already here, and small (3 MB at the default 250 000
pixels). On a cluster each iteration would ship it and wait on the scheduler,
and every worker would first import dask-ml and scikit-learn: with 2 local
worker processes, the fit of the 100 MP benchmark mosaic took 18.2 s that way
against 11.8 s this way. Reading the sample and the two-level fit's
per-cluster tasks do run on a given cluster; a local one of ``workers``
processes starts meanwhile (`bigquant.cluster.ready`), so they run here on
threads too. Around the iterations, bigquant
fixes what dask-ml 2025.1 gets wrong for images:

* init: k-means++ seeds refined by scikit-learn's k-means, both on a 25 000-pixel
  subsample, passed as an explicit array instead of dask-ml's k-means|| (too
  few candidates, first one always ``X[0]``); dask-ml's iterations over the
  whole sample then start close to convergence;
* tolerance: scaled by the sample's mean variance as scikit-learn does, since
  dask-ml compares it with the absolute squared centre shift;
* empty clusters, which dask-ml moves to the origin (black): re-seeded on the
  sample points farthest from their centre and refitted;
* fewer distinct colours than K: those colours, exactly, with no k-means at all;
* distances: each iteration's nearest centres come from scikit-learn's general
  ``pairwise_distances_argmin_min``, per chunk of the sample; bigquant's
  compiled nearest-colour pass gives the same labels 4-5x faster (0.06 against
  0.24-0.37 s for 250 000 pixels and 256 centres on one core), and dask-ml's
  iterations use it while bigquant fits (`_nearest_centers`).

With an explicit init and a fixed chunking of the sample the centres are
bit-identical on threads and on process clusters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from . import defaults
from .errors import BigquantError, ParameterError
from .kernels.color import check_space, from_space, in_dtype, lightness, to_space
from .kernels.nearest import nearest, nodata_mask, sq_errors, table_lookup, table_pays
from .progress import compute
from .sample import sample_many

log = logging.getLogger("bigquant")

DEFAULT_TOL = 1e-4
#: Rows per chunk of the sample handed to dask-ml: fixed, so results do not depend on workers.
SAMPLE_CHUNK = 1 << 16
#: Subsample the initial centres are found on (k-means++ is O(points × K log K)).
_INIT_POINTS = 25_000
#: Most scikit-learn k-means iterations on that subsample.
_INIT_ITER = 50
_REPAIR_ROUNDS = 3
#: Past this many colours, the codebook is fitted in two levels (see `_two_level`).
COARSE_COLORS = 256
#: Sampled pixels per colour a two-level fit draws, at least.
PIXELS_PER_COLOR = 16
#: Most scikit-learn iterations within one coarse cluster.
_FINE_ITER = 30


@dataclass(frozen=True)
class FitResult:
    """A fitted codebook, as `fit_codebook` and `fit_collection` return it.

    Parameters
    ----------
    codebook : ndarray, shape (K, C)
        Colours in the image's dtype (rounded and clipped for integer images),
        dark to light; K can be below the number asked for (an image of
        fewer colours, or colours no sampled pixel is nearest to).
    n_iter : int
        Lloyd iterations run (0 when the image had at most K distinct colours).
    n_samples : int
        Pixels in the sample the codebook was fitted on (those with data).

    Examples
    --------
    >>> import dask.array as da
    >>> import bigquant
    >>> pixels = da.random.randint(0, 256, (256, 256, 3), chunks=128).astype("uint8")
    >>> fit = bigquant.fit_codebook(pixels, 16)
    >>> fit.codebook.shape, fit.codebook.dtype, fit.n_samples
    ((16, 3), dtype('uint8'), 65536)
    """

    codebook: np.ndarray
    n_iter: int
    n_samples: int


def check_n_colors(n_colors: int) -> None:
    if not 1 <= n_colors <= defaults.MAX_COLORS:
        raise ParameterError(
            f"`n_colors` must be between 1 and {defaults.MAX_COLORS}, not {n_colors}"
        )


def check_fit(n_colors: int, sample_size: int, max_iter: int) -> None:
    """Refuse parameters no fit can have."""
    check_n_colors(n_colors)
    if sample_size < 1:
        raise ParameterError(
            f"`sample_size` must be a positive number of pixels, not {sample_size}"
        )
    if max_iter < 1:
        raise ParameterError(f"`max_iter` must be at least 1, not {max_iter}")


def fit_codebook(
    data,
    n_colors: int,
    *,
    sample_size: int = defaults.SAMPLE,
    seed: int = defaults.SEED,
    max_iter: int = defaults.MAX_ITER,
    tol: float = DEFAULT_TOL,
    space: str = defaults.SPACES[0],
    nodata: float | None = None,
) -> FitResult:
    """Fit a ``n_colors`` codebook to a ``(Y, X, C)`` dask array.

    Draws a uniform sample of ``sample_size`` pixels (`sample_pixels`) and
    runs k-means on it in memory. Reads every chunk that holds a sampled
    pixel, whole: a small image entirely, a large one in part, but with
    2048-pixel chunks up to 16 times the few hundred 512-pixel blocks the
    sample is drawn from. For an opened file, pass ``image.with_chunks(512)``
    (`Image.with_chunks`) to read only those blocks, as `compress` does.

    Parameters
    ----------
    data : dask.array.Array, shape (Y, X, C) or (Y, X)
        The image, in a dtype `as_image` accepts.
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
    space : {"rgb", "oklab", "lab"}
        Where k-means measures distances (see `bigquant.kernels.color`); the codebook
        is returned in the image's own values either way.
    nodata : float, optional
        Pixels with every channel equal to it are left out of the sample
        (as NaN and infinite ones always are).

    Returns
    -------
    FitResult
        The codebook, in ``data``'s dtype, with the iterations run and the
        pixels fitted on.

    Raises
    ------
    ParameterError
        ``n_colors`` outside 1 to 65536, ``sample_size`` or ``max_iter`` below
        1, or a ``space`` unknown or unfit for the image (OKLab and Lab need
        exactly 3 channels of unsigned or float values).
    BigquantError
        Every sampled pixel is nodata, NaN or infinite.
    ClusterError
        Worker processes died while reading the sample, or fitting more
        than 256 colours (on a cluster).

    Examples
    --------
    >>> import dask.array as da
    >>> import bigquant
    >>> pixels = da.random.randint(0, 256, (256, 256, 3), chunks=128).astype("uint8")
    >>> bigquant.fit_codebook(pixels, 16, space="oklab").codebook.shape
    (16, 3)
    >>> image = bigquant.open_image("scan.tif")  # doctest: +SKIP
    >>> fit = bigquant.fit_codebook(image.with_chunks(512), 256)  # doctest: +SKIP
    """
    return fit_collection(
        [data],
        n_colors,
        sample_size=sample_size,
        seed=seed,
        max_iter=max_iter,
        tol=tol,
        space=space,
        nodata=[nodata],
    )


def fit_collection(
    images: list,
    n_colors: int,
    *,
    sample_size: int = defaults.SAMPLE,
    seed: int = defaults.SEED,
    max_iter: int = defaults.MAX_ITER,
    tol: float = DEFAULT_TOL,
    space: str = defaults.SPACES[0],
    nodata: list | None = None,
) -> FitResult:
    """Fit one codebook to several ``(Y, X, C)`` dask arrays, as if they were one image.

    The sample is drawn from each image in proportion to its pixels (largest
    remainders; each image's draw seeded from ``seed`` and its position), reading
    each image's chunks that hold sampled pixels once, all in one computation
    (see `fit_codebook` on chunk sizes). Same images, order and seed: same
    codebook. `fit_codebook` is this, for one image.

    Parameters
    ----------
    images : list of dask.array.Array
        Images of shape (Y, X, C) or (Y, X), all of the same number of
        channels and dtype.
    n_colors : int
        K, from 1 to 65536. Past 256, at least 16 pixels per colour are
        sampled, whatever ``sample_size``.
    sample_size : int
        Pixels to sample across all images; all of them when they have fewer.
    seed : int
        Seeds the sample and the k-means++ init.
    max_iter : int
        Bound on Lloyd iterations.
    tol : float
        Relative tolerance on the centre shift, as in scikit-learn.
    space : {"rgb", "oklab", "lab"}
        Where k-means measures distances; the codebook is returned in the
        images' own values.
    nodata : list of (float or None), optional
        Each image's nodata value, or None where it has none.

    Returns
    -------
    FitResult
        The shared codebook, in the images' dtype.

    Raises
    ------
    ParameterError
        As in `fit_codebook`, and for an empty ``images``.
    BigquantError
        Images of different numbers of channels or dtypes, or no sampled
        pixel with data.
    ClusterError
        Worker processes died while reading the sample, or fitting more
        than 256 colours (on a cluster).

    Examples
    --------
    >>> import dask.array as da
    >>> import bigquant
    >>> day = da.random.randint(0, 256, (256, 256, 3), chunks=128).astype("uint8")
    >>> night = day // 4
    >>> fit = bigquant.fit_collection([day, night], 32, sample_size=10_000)
    >>> fit.codebook.shape, fit.n_samples
    ((32, 3), 10000)
    """
    check_fit(n_colors, sample_size, max_iter)
    if not images:
        raise ParameterError("`images` must hold at least one image")
    images = [d[:, :, None] if d.ndim == 2 else d for d in images]
    nodata = nodata or [None] * len(images)
    first = images[0]
    for data in images:
        check_space(space, data.shape[2], data.dtype)
        if (data.shape[2], data.dtype) != (first.shape[2], first.dtype):
            raise BigquantError(
                f"images of {first.shape[2]} channel(s) of {first.dtype} and of "
                f"{data.shape[2]} of {data.dtype} cannot share a codebook"
            )
    if n_colors > COARSE_COLORS and sample_size < PIXELS_PER_COLOR * n_colors:
        sample_size = PIXELS_PER_COLOR * n_colors
        log.info("sampling %d pixels: %d per colour", sample_size, PIXELS_PER_COLOR)
    sizes = [d.shape[0] * d.shape[1] for d in images]
    shares = proportional(min(sample_size, sum(sizes)), sizes)
    # One image keeps `seed` itself: a collection of one is the single-image fit, bit for bit.
    seeds = (
        [seed]
        if len(images) == 1
        else [np.random.SeedSequence((seed, i)) for i in range(len(images))]
    )
    drawn = [(d, n, s, v) for d, n, s, v in zip(images, shares, seeds, nodata, strict=True) if n]
    preload_modules()  # while the sample is read
    started = time.perf_counter()
    samples = sample_many([(d, n, s) for d, n, s, _ in drawn])
    log.info("read the sample in %.2f s", time.perf_counter() - started)
    # Pixels without data are no colour to fit (NaN ones `fit_sample` drops in any case).
    kept = [
        x if v is None else x[~nodata_mask(x[None], v)[0]]
        for x, (*_, v) in zip(samples, drawn, strict=True)
    ]
    use_table = table_pays(sum(sizes), n_colors, first.shape[2], first.dtype)
    return fit_sample(
        np.concatenate(kept), n_colors, seed=seed, max_iter=max_iter, tol=tol, space=space,
        use_table=use_table,
    )  # fmt: skip


def proportional(total: int, sizes: list[int]) -> list[int]:
    """``total`` split in proportion to ``sizes``, in whole numbers (largest remainders)."""
    exact = np.asarray(sizes, dtype=np.float64) * total / max(sum(sizes), 1)
    shares = np.floor(exact).astype(np.int64)
    short = total - int(shares.sum())
    shares[np.argsort(-(exact - shares), kind="stable")[:short]] += 1
    return shares.tolist()


def fit_sample(
    sample: np.ndarray,
    n_colors: int,
    *,
    seed: int = defaults.SEED,
    max_iter: int = defaults.MAX_ITER,
    tol: float = DEFAULT_TOL,
    space: str = defaults.SPACES[0],
    use_table: bool = False,
) -> FitResult:
    """Fit a codebook to an in-memory ``(n, C)`` pixel sample (see `fit_codebook`).

    ``use_table`` labels the sample with the colour table (8-bit, up to 3
    channels), which is worth it when the label pass will build that table anyway.
    """
    check_n_colors(n_colors)
    if not np.issubdtype(sample.dtype, np.integer):
        bad = ~np.isfinite(sample).all(axis=1)
        if bad.any():
            log.info("leaving %d sampled pixels with NaN or infinite values out", int(bad.sum()))
            sample = sample[~bad]
    if len(sample) == 0:
        raise BigquantError("the image has no pixels with data (all nodata, NaN or infinite)")
    n_distinct = _count_distinct(sample)
    if n_distinct <= n_colors:
        if n_distinct < n_colors:
            log.warning(
                "the image has only %d distinct colours (%d requested): the codebook is exactly those",
                n_distinct,
                n_colors,
            )
        return FitResult(by_lightness(np.unique(sample, axis=0)), 0, len(sample))

    x = to_space(sample, space)
    rng = np.random.RandomState(seed)
    abs_tol = tol * float(x.var(axis=0).mean())
    # dask-ml's Lloyd iterations run in float32: faster, and precise enough to place
    # centres that are then rounded to the image's dtype.
    x32 = x.astype(np.float32)
    _modules_ready()
    two_level = n_colors > COARSE_COLORS
    if two_level:
        centers, n_iter = _two_level(x, x32, n_colors, rng, seed, max_iter, abs_tol)
    else:
        centers, n_iter = _one_level(x, x32, n_colors, rng, seed, max_iter, abs_tol)
    started = time.perf_counter()
    for repair in range(_REPAIR_ROUNDS + 1):
        colors = in_dtype(from_space(centers, space, sample.dtype), sample.dtype)
        # Dark to light already here, not once fitted: the colour table the sample is
        # labelled with is then the label pass's table too, not a second one to fill.
        order = np.argsort(lightness(colors), kind="stable")
        colors, centers = colors[order], centers[order]
        # Labels of the sample with the colour table when the label pass will use it too.
        labels, sq_dist = _label_sample(sample, colors, space, use_table)
        used = np.bincount(labels, minlength=n_colors) > 0
        # A refit of every colour at once is what the two-level fit avoids: drop instead.
        if used.all() or repair == _REPAIR_ROUNDS or two_level:
            break
        # dask-ml parks empty clusters at the origin; duplicates after rounding are unused
        # too. Re-seed them on the sample points farthest from their colour, and refit.
        empty = np.flatnonzero(~used)
        log.info("re-seeding %d empty clusters", len(empty))
        centers = centers.copy()
        centers[empty] = x[np.argsort(-sq_dist, kind="stable")[: len(empty)]]
        centers, more = _lloyd(x32, centers, seed, max_iter, abs_tol)
        n_iter += more
    log.info(
        "the sample's labels%s in %.2f s",
        " by colour table (filling it)" if use_table else "",
        _since(started),
    )
    if not used.all():
        log.info("dropping %d codebook colours no sampled pixel is nearest to", int((~used).sum()))
    return FitResult(colors[used], n_iter, len(sample))


def _since(started: float) -> float:
    return time.perf_counter() - started


def _one_level(x, x32, n_colors: int, rng, seed: int, max_iter: int, tol: float):
    """Centres for up to `COARSE_COLORS` colours: the init, then dask-ml's iterations."""
    started = time.perf_counter()
    init = _initial_centers(x, n_colors, rng)
    log.info("init (k-means++ and scikit-learn's k-means) in %.2f s", _since(started))
    started = time.perf_counter()
    centers, n_iter = _lloyd(x32, init, seed, max_iter, tol)
    log.info("dask-ml's %d iterations in %.2f s", n_iter, _since(started))
    return centers, n_iter


def by_lightness(colors: np.ndarray) -> np.ndarray:
    """The colours dark to light (OKLab L; ties keep their order): raw labels then look like
    a greyscale picture in any tool that shows them, and palettes read in order."""
    return colors[np.argsort(lightness(colors), kind="stable")]


def _count_distinct(sample: np.ndarray) -> int:
    """Distinct rows; packed into one integer per row where they fit, which sorts fast."""
    row_bytes = sample.dtype.itemsize * sample.shape[1]
    if row_bytes <= 8:
        padded = np.zeros((len(sample), 8), np.uint8)
        padded[:, :row_bytes] = np.ascontiguousarray(sample).view(np.uint8).reshape(-1, row_bytes)
        return len(np.unique(padded.view(np.uint64)))
    return len(np.unique(sample, axis=0))


def _label_sample(sample: np.ndarray, colors: np.ndarray, space: str, use_table: bool):
    if use_table:
        labels = table_lookup(sample, colors, space)
        return labels, sq_errors(sample, colors, labels)
    return nearest(sample, colors, space)


def _initial_centers(x: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """k-means++ seeds refined by scikit-learn's k-means, both on a subsample.

    Cheap next to dask-ml's iterations over the whole sample, and it leaves
    those iterations little to do. Run on one thread: scikit-learn's threaded
    sums depend on the thread count, and the same seed must give the same codebook.
    """
    from sklearn.cluster import KMeans, kmeans_plusplus
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    sub = x
    if len(x) > _INIT_POINTS:
        sub = x[np.sort(rng.choice(len(x), _INIT_POINTS, replace=False))]
        if len(np.unique(sub, axis=0)) < k:
            sub = x
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # A subsample with few more distinct colours than K converges early; that is fine.
        warnings.simplefilter("ignore", ConvergenceWarning)
        centers, _ = kmeans_plusplus(sub, k, random_state=rng)
        refined = KMeans(k, init=centers, n_init=1, max_iter=_INIT_ITER, random_state=rng)
        return refined.fit(sub).cluster_centers_


def _two_level(
    x: np.ndarray,
    x32: np.ndarray,
    n_colors: int,
    rng: np.random.RandomState,
    seed: int,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, int]:
    """Centres for more than `COARSE_COLORS` colours: coarse clusters, then colours within each.

    dask-ml's iterations cost sample × K distances each, which at K = 65536
    would take hours. Instead dask-ml fits `COARSE_COLORS` coarse clusters;
    each then gets a share of the K colours by its squared error (greedily,
    as high-rate quantization theory has a cluster's error fall as k^(-2/3)),
    and scikit-learn's k-means fits them on that cluster's pixels alone: one
    dask task per cluster, spread over the workers, each seeded from ``seed``
    and its cluster's index, so the result does not depend on where it runs.
    """
    import dask

    started = time.perf_counter()
    init = _initial_centers(x, COARSE_COLORS, rng)
    coarse, n_iter = _lloyd(x32, init, seed, max_iter, tol)
    log.info("%d coarse clusters in %.2f s", COARSE_COLORS, _since(started))
    started = time.perf_counter()
    labels, sq = nearest(x, coarse)
    members = [np.flatnonzero(labels == i) for i in range(len(coarse))]
    distinct = np.array([_count_distinct(x[m]) if len(m) else 0 for m in members])
    shares = _shares(np.bincount(labels, weights=sq, minlength=len(coarse)), distinct, n_colors)
    tasks = [
        dask.delayed(_fit_cluster, pure=True)(x[m], int(k), k == d, [seed, i])
        for i, (m, k, d) in enumerate(zip(members, shares, distinct, strict=True))
        if k
    ]
    centers = np.concatenate(compute(*tasks))
    log.info("the colours within them in %.2f s", _since(started))
    return centers, n_iter


def _shares(sse: np.ndarray, distinct: np.ndarray, n_colors: int) -> np.ndarray:
    """Colours per coarse cluster: one each, then greedily where they cut the error most."""
    import heapq

    shares = np.minimum(distinct, 1)
    # A cluster's error with k colours falls about as k^(-2/3) (3 dimensions).
    heap = [(-(e * (1 - 2 ** (-2 / 3))), i) for i, e in enumerate(sse) if distinct[i] > 1]
    heapq.heapify(heap)
    for _ in range(n_colors - int(shares.sum())):
        _, i = heapq.heappop(heap)
        shares[i] += 1
        k = shares[i]
        if k < distinct[i]:
            heapq.heappush(heap, (-(sse[i] * (k ** (-2 / 3) - (k + 1) ** (-2 / 3))), i))
    return shares


def _fit_cluster(points: np.ndarray, k: int, every: bool, seed: list[int]) -> np.ndarray:
    """``k`` centres for one coarse cluster's points (scikit-learn k-means, one thread).

    ``every``: the cluster has exactly ``k`` distinct points, which are the centres.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    if every:
        return np.unique(points, axis=0)
    rng = np.random.RandomState(seed)
    with threadpool_limits(limits=1):
        km = KMeans(k, n_init=1, max_iter=_FINE_ITER, random_state=rng).fit(points)
    return km.cluster_centers_


#: The thread `preload_modules` started, if any.
_preloading: list[threading.Thread] = []
_preload_lock = threading.Lock()


def preload_modules() -> None:
    """Import scikit-learn and dask-ml and load dask-ml's compiled code (`dask_ml_kmeans`) in
    a background thread, while this one reads the sample: on 2 cores, the imports (seconds
    of pure Python, mostly scikit-learn's own imports of SciPy) would otherwise wait for it.

    Started once the image is open, not before: opening it imports dask.array, whose
    imports would share the interpreter with these and start the sample later. Started
    before, the fit began 0.15 s later at 100 MP and at 1 GP (3.36-3.43 s against
    3.21-3.27 s into the command at 100 MP, interleaved runs).

    Once per process; `fit_sample` waits for it before it needs them.
    """
    with _preload_lock:
        if not _preloading:
            thread = threading.Thread(target=_load_modules, name="bigquant-preload", daemon=True)
            _preloading.append(thread)
            thread.start()


def _load_modules() -> None:
    import sklearn.cluster  # noqa: F401

    dask_ml_kmeans()


def _modules_ready() -> None:
    """Wait for the thread `preload_modules` started (if any) to have loaded the modules."""
    if _preloading and _preloading[0].is_alive():
        started = time.perf_counter()
        _preloading[0].join()
        log.info("waited %.2f s for scikit-learn's and dask-ml's imports", _since(started))


@functools.cache
def dask_ml_kmeans():
    """dask-ml's ``KMeans`` class, with its compiled centre update cached on disk and loaded.

    dask-ml 2025.1 compiles its centre update (``k_means._centers_dense``,
    numba) in every process that fits, because it does not ask numba to cache
    it: 0.85 s of one core before the first Lloyd iteration, on top of
    numba's own start (0.5-0.9 s), while the other core waits. numba caches it
    here like bigquant's kernels, and a call on one pixel loads it (and starts
    numba), so that `bigquant.pipeline` can do both while the sample is read.
    """
    from dask_ml.cluster import KMeans, k_means

    update = getattr(k_means, "_centers_dense", None)
    if hasattr(update, "enable_caching"):  # a numba dispatcher, as in dask-ml 2025.1
        try:
            update.enable_caching()
        except RuntimeError:  # no writable place for numba's cache: compiled in memory
            log.debug("numba cannot cache dask-ml's centre update here")
        # The types `_lloyd` calls it with: float32 pixels, int32 labels.
        update(np.zeros((1, 1), np.float32), np.zeros(1, np.int32), 1)
    return KMeans


def _lloyd(x: np.ndarray, init: np.ndarray, seed: int, max_iter: int, tol: float):
    """dask-ml's iterations from ``init`` over the in-memory sample ``x``, on local threads
    (see the module's docstring)."""
    import dask
    import dask.array as da

    from .progress import local_options

    km = dask_ml_kmeans()(
        n_clusters=len(init),
        init=init.astype(x.dtype),
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
    )
    # Named, as `bigquant.progress.compute` names it: dask looks up no client then.
    with dask.config.set(**local_options()), _compiled_distances():
        km.fit(da.from_array(x, chunks=(SAMPLE_CHUNK, x.shape[1])))
    return np.asarray(km.cluster_centers_, dtype=np.float64), int(km.n_iter_)


#: Fits in progress that use `_nearest_centers`, and the function it stands in for.
_swapped: list = [0, None]
_swap_lock = threading.Lock()


@contextlib.contextmanager
def _compiled_distances():
    """dask-ml's Lloyd iterations call `_nearest_centers` for their nearest centres meanwhile.

    They look ``pairwise_distances_argmin_min`` up in their module at each
    iteration; it is put back when the last fit running in this process ends.
    """
    from dask_ml.cluster import k_means

    with _swap_lock:
        if _swapped[0] == 0:
            _swapped[1] = k_means.pairwise_distances_argmin_min
            k_means.pairwise_distances_argmin_min = _nearest_centers
        _swapped[0] += 1
    try:
        yield
    finally:
        with _swap_lock:
            _swapped[0] -= 1
            if _swapped[0] == 0:
                k_means.pairwise_distances_argmin_min = _swapped[1]


def _nearest_centers(X, Y, axis=1, metric="euclidean", batch_size=None, metric_kwargs=None):
    """dask-ml's ``pairwise_distances_argmin_min`` (Euclidean, as its iterations ask), by
    `nearest` on each chunk of the sample: the index of each row's nearest centre and its
    (squared, if ``metric_kwargs`` says so) distance, as lazy arrays."""
    import dask
    import dask.array as da

    if metric != "euclidean" or axis != 1:  # not dask-ml's iterations: its own function
        return _swapped[1](X, Y, axis, metric, batch_size, metric_kwargs)
    squared = bool((metric_kwargs or {}).get("squared", False))
    centers = np.asarray(Y, dtype=np.float64)
    blocks = [
        dask.delayed(_nearest_block, pure=True, nout=2)(block, centers, squared)
        for block in X.to_delayed().ravel()
    ]
    labels, distances = (
        da.concatenate(
            [
                da.from_delayed(b[part], (n,), dtype)
                for b, n in zip(blocks, X.chunks[0], strict=True)
            ]
        )
        for part, dtype in ((0, np.int64), (1, np.float64))
    )
    return labels, distances


def _nearest_block(x: np.ndarray, centers: np.ndarray, squared: bool):
    labels, sq = nearest(x, centers)
    return labels, sq if squared else np.sqrt(sq)
