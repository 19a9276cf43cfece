"""The whole pipeline: read → sample → fit → assign → write."""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import numpy as np

from . import __version__, location
from .cluster import scheduler
from .color import check_space, peak_value
from .dither import check_dither
from .errors import BigquantError
from .fit import DEFAULT_MAX_ITER, check_n_colors, fit_codebook
from .label import label_dtype
from .progress import progress
from .pyramid import write_pyramid
from .read import Image, as_image, open_image
from .sample import DEFAULT_SAMPLE, SAMPLE_BLOCK
from .store import (
    ATTR_KEY,
    FORMAT_VERSION,
    atomic_output,
    create_store,
    finish_store,
    open_partial,
    partial_path,
)
from .write import finished_chunks, regular_chunks, total_stats, write_labels

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


def compress(
    src,
    dst,
    n_colors: int = 256,
    *,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0,
    chunks: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    space: str = "rgb",
    dither: str | None = None,
    pyramid: bool = False,
    zarr_format: int = 3,
    overwrite: bool = False,
    resume: bool = False,
    client=None,
    workers: int | None = None,
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
    space : {"rgb", "oklab", "lab"}
        Colour space the codebook is fitted and the pixels assigned in
        (`bigquant.color`); the codebook is stored in the source's values.
    dither : {None, "ordered", "floyd-steinberg"}
        Dither the labels (`bigquant.dither`): smoother gradients, lower PSNR.
    pyramid : bool
        Also write halved label levels with OME-Zarr multiscales metadata, for
        OME-Zarr viewers (`bigquant.pyramid`); reads the labels back once.
    chunks : int, optional
        Target chunk side when ``src`` is a path (see `open_image`).
    zarr_format : {3, 2}
    overwrite : bool
        Replace an existing ``dst`` (only once the new store is complete).
    resume : bool
        Finish the store an interrupted run with the same source and
        parameters left behind, keeping its codebook and finished chunks.
    client : distributed.Client or str, optional
        Run on this client, or on the scheduler at this address.
    workers : int, optional
        Run on a local cluster of this many worker processes.
    show_progress : bool
        Progress bars on stderr.

    Returns
    -------
    dict
        The store's ``bigquant`` attributes.

    Notes
    -----
    Reads the image once to label it, chunk by chunk, plus the few hundred
    blocks the sample is drawn from (all of an image up to 67 megapixels).
    An interrupted or failed run (other than on bad input) leaves its
    unfinished store in ``.DST.partial`` for ``resume``.
    """
    check_n_colors(n_colors)
    if sample_size < 1:
        raise BigquantError(f"--sample must be a positive number of pixels, not {sample_size}")
    dst = location.normalize(dst)
    if location.exists(dst) and not overwrite:
        raise BigquantError(f"{dst} already exists (use --overwrite to replace it)")
    if isinstance(src, (str, os.PathLike)):
        if location.normalize(src) == dst:
            raise BigquantError(f"{dst}: the output would replace its own source")
        image = open_image(src, chunks=chunks)
        # The sample comes from a few hundred small blocks: read them through small chunks,
        # so that only their tiles are decoded.
        sampling = open_image(src, chunks=SAMPLE_BLOCK).data
    else:
        if resume:
            raise BigquantError("--resume needs a source file, not an in-memory array")
        image = src if isinstance(src, Image) else as_image(src)
        sampling = image.data
    data = regular_chunks(image.data)
    height, width, n_channels = data.shape
    check_space(space, n_channels)
    check_dither(dither, n_channels, data.dtype, space, n_colors)
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
    # What a resumed run must share with the run it finishes.
    run = {
        "source": _source_identity(image),
        "n_colors_requested": n_colors,
        "seed": seed,
        "sample_size_requested": sample_size,
        "max_iter": max_iter,
        "space": space,
        "dither": dither,
        "pyramid": pyramid,
        "chunks": [data.chunks[0][0], data.chunks[1][0]],
        "zarr_format": zarr_format,
    }
    partial = _resumable(dst, run) if resume else None

    with (
        scheduler(client, workers=workers),
        atomic_output(dst, overwrite=overwrite, resumable=image.path is not None) as tmp,
    ):
        if partial is None:
            started = time.perf_counter()
            _preload_fit_modules()
            with progress("sampling", show_progress):
                fit = fit_codebook(
                    sampling,
                    n_colors,
                    sample_size=sample_size,
                    seed=seed,
                    max_iter=max_iter,
                    space=space,
                )
            codebook = fit.codebook
            log.info(
                "fitted %d colours on %d pixels in %d iterations (%.1f s)",
                len(codebook),
                fit.n_samples,
                fit.n_iter,
                time.perf_counter() - started,
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
                "space": space,
                "dither": dither,
                "n_iter": fit.n_iter,
                "run": run,
                "complete": False,
            }
            location.remove(tmp)  # a stale unfinished run, not resumed
            group, labels, stats = create_store(
                tmp,
                (height, width),
                run["chunks"],
                label_dtype(len(codebook)),
                len(codebook),
                zarr_format=zarr_format,
            )
            group.attrs.update({"codebook": codebook.tolist(), ATTR_KEY: meta})
            done = None
        else:
            group, labels, stats = partial
            meta = dict(group.attrs[ATTR_KEY])
            codebook = np.asarray(group.attrs["codebook"], dtype=data.dtype)
            done = finished_chunks(stats)
            log.info("resuming: %d of %d chunks already written", done.sum(), done.size)
        with progress("labelling", show_progress):
            write_labels(data, codebook, labels, stats, space=space, dither=dither, skip=done)
        sse, delta_e, counts = total_stats(stats, (height, width))
        mse = sse / (height * width * n_channels)
        meta.update(
            mse=mse,
            # JSON has no infinity: a lossless result (MSE 0) records PSNR as null.
            psnr=None if mse == 0 else psnr(mse, peak_value(data.dtype)),
            # Mean ΔE_OK (see bigquant.color), for RGB images only.
            delta_e=None if math.isnan(delta_e) else delta_e,
            counts=counts.tolist(),
        )
        if pyramid:
            # After the labels, before completion: a store is never complete without its levels.
            meta["pyramid"] = write_pyramid(group, codebook, show_progress=show_progress)
        finish_store(group, meta)
    return meta


def _source_identity(image: Image) -> dict | None:
    """Path, size and modification time of a source file, to recognise it on resume."""
    return None if image.path is None else location.identity(image.path)


def _resumable(dst: str, run: dict):
    """The unfinished store of an earlier run with the same ``run`` parameters, or None."""
    tmp = partial_path(dst)
    if not location.exists(tmp):
        log.warning("nothing to resume at %s: starting afresh", tmp)
        return None
    partial = open_partial(tmp)
    earlier = partial[0].attrs.get(ATTR_KEY, {}).get("run") if partial else None
    if earlier and set(earlier) != set(run):
        raise BigquantError(
            f"cannot resume {tmp}: it was started by another version of bigquant; "
            "run without --resume to start afresh"
        )
    if earlier != run:
        changed = sorted(k for k in run if not earlier or earlier.get(k) != run[k])
        raise BigquantError(
            f"cannot resume {tmp}: it was started with a different "
            f"{', '.join(changed) or 'layout'}; run without --resume to start afresh"
        )
    return partial
