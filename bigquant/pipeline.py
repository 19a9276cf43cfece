"""The whole pipeline: read → sample → fit → assign → write."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from . import __version__
from .errors import BigquantError
from .fit import DEFAULT_MAX_ITER, check_n_colors, fit_codebook
from .label import label_dtype
from .progress import progress
from .read import Image, as_image, open_image
from .sample import DEFAULT_SAMPLE, SAMPLE_BLOCK
from .store import ATTR_KEY, FORMAT_VERSION, atomic_output, create_store
from .write import regular_chunks, write_labels

log = logging.getLogger("bigquant")


def _preload_fit_modules() -> None:
    """Import dask-ml and scikit-learn (seconds of pure Python) while the sample is read."""

    def load():
        import dask_ml.cluster  # noqa: F401
        import sklearn.cluster  # noqa: F401

    threading.Thread(target=load, name="bigquant-preload", daemon=True).start()


def psnr(mse: float, peak: float) -> float:
    """Peak signal-to-noise ratio in dB (infinite for a perfect reconstruction)."""
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def peak_value(dtype: np.dtype) -> float:
    """The largest value of integer pixels; 1.0 for float images (assumed in [0, 1])."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def compress(
    src,
    dst,
    n_colors: int = 256,
    *,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0,
    chunks: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    zarr_format: int = 3,
    overwrite: bool = False,
    show_progress: bool = False,
) -> dict:
    """Quantize an image to ``n_colors`` and write a bigquant store at ``dst``.

    Parameters
    ----------
    src : path-like, Image, numpy or dask array
        A file `open_image` reads, or an array of shape (Y, X) or (Y, X, C).
    dst : path-like
        The store to create; refused if it exists unless ``overwrite``.
    n_colors : int
        K, from 1 to 65536.
    sample_size, seed, max_iter
        See `fit_codebook`.
    chunks : int, optional
        Target chunk side when ``src`` is a path (see `open_image`).
    zarr_format : {3, 2}
    overwrite : bool
        Replace an existing ``dst`` (only once the new store is complete).
    show_progress : bool
        Progress bars on stderr.

    Returns
    -------
    dict
        The store's ``bigquant`` attributes.

    Notes
    -----
    Reads the image once to label it, chunk by chunk, plus the few hundred
    blocks the sample is drawn from (all of an image up to 67 megapixels). Memory stays bounded by a few chunks per
    worker thread plus the sample.
    """
    check_n_colors(n_colors)
    if sample_size < 1:
        raise BigquantError(f"--sample must be a positive number of pixels, not {sample_size}")
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise BigquantError(f"{dst} already exists (use --overwrite to replace it)")
    if isinstance(src, (str, os.PathLike)):
        if Path(src).resolve() == dst.resolve():
            raise BigquantError(f"{dst}: the output would replace its own source")
        image = open_image(src, chunks=chunks)
        # The sample comes from a few hundred small blocks: read them through small chunks,
        # so that only their tiles are decoded.
        sampling = open_image(src, chunks=SAMPLE_BLOCK).data
    else:
        image = src if isinstance(src, Image) else as_image(src)
        sampling = image.data
    data = regular_chunks(image.data)
    height, width, n_channels = data.shape
    log.info(
        "%s: %d x %d pixels, %d channel(s) of %s, chunks of %d x %d",
        image.path or "array",
        height,
        width,
        n_channels,
        data.dtype,
        data.chunks[0][0],
        data.chunks[1][0],
    )

    started = time.perf_counter()
    _preload_fit_modules()
    with progress("sampling", show_progress):
        fit = fit_codebook(
            sampling, n_colors, sample_size=sample_size, seed=seed, max_iter=max_iter
        )
    codebook = fit.codebook
    fitted = time.perf_counter()
    log.info(
        "fitted %d colours on %d pixels in %d iterations (%.1f s)",
        len(codebook),
        fit.n_samples,
        fit.n_iter,
        fitted - started,
    )

    meta = {
        "format_version": FORMAT_VERSION,
        "bigquant_version": __version__,
        "source": {
            "path": image.path,
            "shape": [height, width, n_channels],
            "dtype": str(data.dtype),
            "photometric": image.photometric,
        },
        "n_colors_requested": n_colors,
        "n_colors": len(codebook),
        "seed": seed,
        "sample_size": fit.n_samples,
        "max_iter": max_iter,
        "n_iter": fit.n_iter,
        "complete": False,
    }
    with atomic_output(dst, overwrite=overwrite) as tmp:
        group, labels = create_store(
            tmp,
            (height, width),
            (data.chunks[0][0], data.chunks[1][0]),
            label_dtype(len(codebook)),
            zarr_format=zarr_format,
        )
        group.attrs.update({"codebook": codebook.tolist(), ATTR_KEY: meta})
        with progress("assigning", show_progress):
            sse, counts = write_labels(data, codebook, labels)
        mse = sse / (height * width * n_channels)
        meta.update(
            mse=mse,
            # JSON has no infinity: a lossless result (MSE 0) records PSNR as null.
            psnr=None if mse == 0 else psnr(mse, peak_value(data.dtype)),
            counts=counts.tolist(),
            seconds={
                "fit": round(fitted - started, 3),
                "assign": round(time.perf_counter() - fitted, 3),
            },
        )
        # The completion marker goes last: a store without it never reads as complete.
        meta["complete"] = True
        group.attrs[ATTR_KEY] = meta
    return meta
