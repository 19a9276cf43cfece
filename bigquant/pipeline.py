"""The whole pipeline: read → sample → fit → assign → write, and the run that ties them."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import posixpath
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import dask
import numpy as np

from . import defaults, location
from .cluster import ready, scheduler
from .errors import BigquantError, ParameterError
from .fit import FitResult, fit_collection
from .kernels.dither import margin
from .output import Claim, Output
from .palettes import GivenCodebook, check_codebook, load_codebook
from .progress import compute as run_tasks
from .progress import computes_here, on_worker, progress
from .pyramid import write_pyramid
from .read import DECODED, Image, as_image, open_image
from .sample import SAMPLE_BLOCK, sampled_blocks
from .settings import Settings
from .store import (
    PartialStore,
    SourceInfo,
    Store,
    StoreMeta,
    create_store,
    finish_store,
    open_partial,
    open_store,
    origin_text,
)
from .write import label_writes, regular_chunks, total_stats, write_unit

if TYPE_CHECKING:
    from dask.delayed import Delayed

log = logging.getLogger("bigquant")


def psnr(mse: float, peak: float) -> float:
    """Peak signal-to-noise ratio in dB (infinite for a perfect reconstruction)."""
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def compress(
    src,
    dst,
    n_colors: int = defaults.COLORS,
    *,
    sample_size: int = defaults.SAMPLE,
    seed: int = defaults.SEED,
    chunks: int | None = None,
    max_iter: int = defaults.MAX_ITER,
    space: str = defaults.SPACES[0],
    dither: str | None = None,
    pyramid: bool = False,
    zarr_format: int = defaults.ZARR_FORMATS[0],
    codebook=None,
    overwrite: bool = False,
    resume: bool = False,
    client=None,
    workers: int | None = None,
    show_progress: bool = False,
    compute: bool = True,
) -> StoreMeta | Delayed:
    """Quantize an image to ``n_colors`` and write a bigquant store at ``dst``.

    Parameters
    ----------
    src : path-like, Image, numpy or dask array
        A file `open_image` reads, or an array of shape (Y, X) or (Y, X, C).
    dst : path-like
        The store to create; refused if it exists unless ``overwrite``.
    n_colors : int
        K, from 1 to 65536 (65535 for an image with nodata, whose label
        takes one more row).
    sample_size : int
        Pixels the codebook is fitted on (see `fit_codebook`).
    seed : int
        Seeds the sample and the k-means init: same seed, same codebook.
    chunks : int, optional
        Target chunk side when ``src`` is a path (see `open_image`); the
        labels are chunked like the image.
    max_iter : int
        Bound on Lloyd iterations (see `fit_codebook`).
    space : {"rgb", "oklab", "lab"}
        Colour space the codebook is fitted and the pixels assigned in
        (`bigquant.kernels.color`); the codebook is stored in the source's values.
    dither : {None, "ordered", "floyd-steinberg"}
        Dither the labels (`bigquant.kernels.dither`): smoother gradients, lower PSNR.
    pyramid : bool
        Also write halved label levels with OME-Zarr multiscales metadata, for
        OME-Zarr viewers (`bigquant.pyramid`); reads the labels back once.
    zarr_format : {3, 2}
        Zarr format of the store (2 for tools that read no other).
    codebook : path-like, array or GivenCodebook, optional
        Apply this codebook instead of fitting one (``n_colors``, ``sample_size``,
        ``max_iter`` then do nothing): a bigquant store, a palette TIFF or a
        palette file (`bigquant.palettes`), or a ``(K, C)`` array in the image's
        values. Labels are the exact nearest colours (in ``space``), in the
        codebook's order.
    overwrite : bool
        Replace an existing ``dst`` (only once the new store is complete).
    resume : bool
        Finish the store an interrupted run with the same source and
        parameters left behind, keeping its codebook and finished chunks.
    client : distributed.Client or str, optional
        Run on this client, or on the scheduler at this address.
    workers : int, optional
        Run on a local cluster of this many worker processes; it starts while
        the sample is read and the codebook fitted on this process's threads.
    show_progress : bool
        Progress bars on stderr.
    compute : bool
        False: read the sample, fit the codebook and create the unfinished
        store now, and return a `dask.delayed.Delayed` whose computation
        labels and writes every chunk, finishes the store and moves it into
        place (as ``dask.array.to_zarr(compute=False)``): compute several
        together on one cluster, or time the planning. ``dst`` stays claimed
        until then; a computation that fails leaves the unfinished store for
        ``resume``. Not with ``workers``.

    Returns
    -------
    StoreMeta or dask.delayed.Delayed
        The store's ``bigquant`` attribute, quality figures (``mse``,
        ``psnr``, ``counts``) included; with ``compute=False``, the Delayed
        that computes to it.

    Raises
    ------
    ParameterError
        A parameter out of range or unfit for the image (``n_colors``,
        ``sample_size``, ``max_iter``, ``zarr_format``, ``chunks``,
        ``workers``, ``space``, ``dither``), both ``client`` and
        ``workers``, ``dst`` existing without ``overwrite`` (or, even with
        it, something other than a bigquant store), ``dst`` left claimed by
        a run that is gone, without ``resume`` or ``overwrite``, or a
        ``resume`` that cannot be (an in-memory source, or an unfinished
        store started with other parameters).
    BigquantError
        A source `open_image` or `as_image` refuses, a ``dst`` that would
        replace it, lies in a missing directory or is being written by
        another run, a ``codebook`` that cannot be read or does not fit the
        image, an image without a pixel of data, a scheduler that cannot be
        reached or local workers that do not start.
    ClusterError
        Worker processes died (usually out of memory); the unfinished store
        of a file source is kept for ``resume``.

    Notes
    -----
    Reads the whole image once, chunk by chunk, to label it (with
    ``dither="floyd-steinberg"`` each chunk also reads a margin of its
    neighbours), and before that the blocks the sample is drawn from: for a
    path, the few hundred 512-pixel blocks (all of an image up to 67
    megapixels); for an array or an `Image`, every chunk that holds a
    sampled pixel, whole. ``pyramid`` reads the labels back once more; a
    ``codebook`` given as a palette TIFF that bigquant did not write is read
    whole once (see `load_codebook`). Memory holds a few chunks and the
    sample, never the image; when a TIFF of up to about 268 megapixels is
    read and labelled, undithered, on this process's threads, also up to
    256 MiB of the tiles the sample decoded, until the label pass takes them
    (`bigquant.read.DECODED`). An interrupted or failed run (other than on bad
    input) leaves its unfinished store in ``.DST.partial`` for ``resume``.
    For the store's layout, see the store format specification in the
    documentation (docs/store.md).

    Examples
    --------
    >>> import bigquant
    >>> meta = bigquant.compress("scan.tif", "scan.zarr", 256)  # doctest: +SKIP
    >>> meta.n_colors, round(meta.psnr, 1)  # doctest: +SKIP
    (256, 38.2)
    >>> bigquant.compress(  # doctest: +SKIP
    ...     "s3://bucket/mosaic.tif", "s3://bucket/mosaic.zarr", 64,
    ...     space="oklab", dither="ordered", workers=8,
    ... )
    >>> import dask.array as da
    >>> pixels = da.random.randint(0, 256, (1024, 1024, 3), chunks=512).astype("uint8")
    >>> bigquant.compress(pixels, "random.zarr", 16).n_colors  # doctest: +SKIP
    16

    On a cluster, several images at once (each fitted here, then all labelled together):

    >>> import dask
    >>> from distributed import Client
    >>> with Client("tcp://scheduler:8786") as client:  # doctest: +SKIP
    ...     runs = [
    ...         bigquant.compress(f"s3://bucket/{name}.tif", f"s3://bucket/{name}.zarr",
    ...                           client=client, compute=False)
    ...         for name in ("north", "south")
    ...     ]
    ...     metas = dask.compute(*runs)
    """
    settings = Settings(
        n_colors=n_colors, seed=seed, sample_size=sample_size, max_iter=max_iter, space=space,
        dither=dither, pyramid=pyramid, chunks=chunks, zarr_format=zarr_format,
    )  # fmt: skip
    settings.check()
    if not compute and workers is not None:
        raise ParameterError(
            "`compute=False` leaves the labelling to the scheduler the result is computed on: "
            "give a `client` (or none), not `workers`"
        )
    return _compress(
        src,
        location.normalize(dst),
        settings,
        codebook,
        overwrite=overwrite,
        resume=resume,
        client=client,
        workers=workers,
        show_progress=show_progress,
        compute=compute,
    )


def _compress(
    src,
    dst: str,
    settings: Settings,
    codebook,
    *,
    overwrite: bool,
    resume: bool,
    client,
    workers: int | None,
    show_progress: bool,
    compute: bool = True,
) -> StoreMeta | Delayed:
    """`compress` once its settings are checked (`compress_many` runs this for each image)."""
    # The claim on `dst` first, before a partial store is looked at or written: a second run
    # into the same output stops here.
    output = Output(dst, "store")
    with output.claim(take_stale=resume or overwrite) as claimed:
        if not resume:  # a resume may finish a move that left part of `dst` (checked below)
            output.check_absent(overwrite)
        given = None if codebook is None else _given(codebook)
        image, sampling = _open_source(src, dst, chunks=settings.chunks, resume=resume)
        data = regular_chunks(image.data)
        nodata = _nodata(image)
        settings.check_image(data, nodata)
        colors = None if given is None else check_codebook(given, data.dtype, data.shape[2], nodata)
        _describe(image, data)
        run = settings.identity(image.path, data, colors)
        partial = _resumable(output, run) if resume else None
        if isinstance(partial, Store):
            log.info(
                "resuming: %s is complete, only moving it into place was cut short", partial.path
            )
            with output.write(overwrite=overwrite, resumable=True):
                pass  # leaving the block moves the finished store into place
            return partial.meta if compute else dask.delayed(partial.meta)
        with (
            scheduler(client, workers=workers),
            output.write(
                overwrite=overwrite, resumable=image.path is not None, move=compute
            ) as tmp,
            _sample_tiles_kept(image, settings, compute and workers is None) as stop_keeping,
        ):
            done = None
            if partial is None:
                applied = None if given is None else (colors, given.origin)
                partial = _start(
                    tmp, image, data, sampling, settings, run, nodata, applied, show_progress
                )
            else:
                done = partial.finished_chunks()
                log.info("resuming: %d of %d chunks already written", done.sum(), done.size)
            stop_keeping()  # the sample is read; the label pass takes the tiles it decoded
            ready()  # local worker processes have started while the codebook was fitted here
            written = label_writes(
                _in_units(image, data, partial.stats.chunks[0]),
                partial.codebook, partial.labels, partial.stats,
                space=settings.space, dither=settings.dither, nodata=nodata, skip=done,
            )  # fmt: skip
            if not compute:
                # The store stays claimed (and unfinished, at `tmp`) until the result is computed.
                return dask.delayed(_complete, pure=False)(
                    written, output, claimed.keep() if claimed else None
                )
            started = time.perf_counter()
            with progress("labelling", show_progress):
                run_tasks(written, writing=True)
            log.info("labelled and wrote the image in %.2f s", time.perf_counter() - started)
            meta = _finish(partial, show_progress)
        return meta


@contextlib.contextmanager
def _sample_tiles_kept(
    image: Image, settings: Settings, wanted: bool
) -> Iterator[Callable[[], None]]:
    """Within the block, the TIFF tiles ``image``'s reads decode are kept (`DECODED`) until
    the function it yields is called, for the label pass to take: the sample's tiles are
    not decoded twice. Only where ``wanted``, both passes run in this process, the
    sample's blocks are at least `defaults.KEPT_TILE_SHARE` of the image, and the labels
    are not dithered.

    At 100 megapixels the sample decodes 64 % of the image (256 of 400 blocks), and
    the command took 4.23 s against 4.37 s, its peak memory 687 MiB against 495 (the
    benchmark mosaic, interleaved runs). At 1 GP, where the sample is 7 % of the
    image, it took 12.39 s against 12.50 s for 708 MiB against 523: not kept there.
    Dithering's label pass takes twice as long and holds more: with kept tiles,
    Floyd-Steinberg peaked at 1037 MiB at 100 MP, against 860 without.
    """
    drawn, blocks = sampled_blocks(image.data.shape[:2], settings.sample_size)
    if (
        image.path is None
        or not wanted
        or settings.dither is not None
        or drawn < defaults.KEPT_TILE_SHARE * blocks
        or not computes_here()
    ):
        yield lambda: None
        return
    with DECODED.keeping(image.path, defaults.KEPT_TILE_BYTES) as stop:
        yield stop


def _finish(partial: PartialStore, show_progress: bool = False) -> StoreMeta:
    """Complete a store whose labels are all written: quality, pyramid, ``complete``."""
    meta = _with_quality(partial.meta, partial.stats, partial.meta.source.shape)
    if partial.meta.run.get("pyramid"):
        # After the labels, before completion: a store is never complete without its levels.
        levels = write_pyramid(
            partial.group,
            partial.codebook,
            pixel_size=partial.meta.source.pixel_size,
            nodata_label=partial.meta.nodata_label,
            peak=partial.meta.source.peak,
            show_progress=show_progress,
        )
        meta = dataclasses.replace(meta, pyramid=levels)
    return finish_store(partial, meta)


def _complete(written: list, output: Output, claimed: Claim | None) -> StoreMeta:
    """The last task of a deferred run (``compute=False``), once every unit is ``written``:
    finish the store, move it into place and release its claim."""
    with on_worker():  # the pyramid's tasks go to the cluster this task runs on, if any
        meta = _finish(open_partial(output.partial))
    output.move_into_place()
    if claimed is not None:
        claimed.release()
    return meta


def _describe(image: Image, data) -> None:
    log.info(
        "%s: %d x %d pixels, %d channel(s) of %s, chunks of %d x %d",
        image.path or "array",
        *data.shape,
        data.dtype,
        data.chunks[0][0],
        data.chunks[1][0],
    )


def _open_source(src, dst: str, *, chunks: int | None, resume: bool) -> tuple[Image, object]:
    """The image, and the same image chunked for drawing the sample (a dask array)."""
    if not isinstance(src, (str, os.PathLike)):
        if resume:
            raise ParameterError("`resume` needs a source file, not an in-memory array")
        image = src if isinstance(src, Image) else as_image(src)
        return image, image.data
    if location.normalize(src) == dst:
        raise BigquantError(f"{dst}: the output would replace its own source")
    # The sample comes from a few hundred small blocks: read them through small chunks,
    # so that only their tiles are decoded.
    image = open_image(src, chunks=chunks)
    return image, image.with_chunks(SAMPLE_BLOCK)


def compress_many(
    srcs,
    outdir,
    n_colors: int = defaults.COLORS,
    *,
    codebook=None,
    overwrite: bool = False,
    client=None,
    workers: int | None = None,
    show_progress: bool = False,
    **settings,
) -> list[StoreMeta]:
    """Fit one codebook to a collection of images and write a store of each, all sharing it.

    ``OUTDIR/NAME.zarr`` for each source ``NAME.EXT``. The codebook is fitted
    on a sample drawn across all images in proportion to their pixels
    (`fit_collection`: the sample blocks of each image are read
    once), then each image is labelled with it as `compress` does with a
    given ``codebook``; every store records the collection
    (``codebook_from``). With ``codebook``, that one is applied to every image
    and nothing is fitted. Reads each image whole once, chunk by chunk, to
    label it, plus its sample blocks before that; memory never holds an image.

    Parameters
    ----------
    srcs : iterable of path-like
        The image files (local paths or URLs), all of the same number of
        channels and dtype.
    outdir : path-like or URL
        Where the stores go (created if missing).
    n_colors : int
        K, from 1 to 65536, for the shared codebook.
    codebook : path-like, array or GivenCodebook, optional
        Apply this codebook to every image instead of fitting one (see
        `compress`).
    overwrite : bool
        Replace existing stores (each once its new one is complete).
    client : distributed.Client or str, optional
        Run on this client, or on the scheduler at this address.
    workers : int, optional
        Run on a local cluster of this many worker processes.
    show_progress : bool
        Progress bars on stderr.
    **settings
        ``sample_size`` (pixels sampled across all images), ``seed``,
        ``chunks``, ``max_iter``, ``space``, ``dither``, ``pyramid``,
        ``zarr_format``: as for `compress`, the same for every image.

    Returns
    -------
    list of StoreMeta
        Each store's ``bigquant`` attribute, in the order of ``srcs``.

    Raises
    ------
    ParameterError
        No ``srcs``, an output that exists without ``overwrite`` (checked for
        every image before any is read), or a parameter `compress` refuses.
    BigquantError
        Two sources of the same name, an output that would replace its
        source or is being written by another run, images of different
        channels or dtypes, or anything `compress` refuses.
    ClusterError
        Worker processes died (usually out of memory). The stores finished
        before it stay (a rerun needs ``overwrite``); the unfinished one is
        left in ``.NAME.zarr.partial``, which a rerun starts afresh.

    Examples
    --------
    >>> import bigquant
    >>> metas = bigquant.compress_many(  # doctest: +SKIP
    ...     ["tiles/a.tif", "tiles/b.tif"], "stores", 128, workers=4
    ... )
    >>> [m.codebook_from["kind"] for m in metas]  # doctest: +SKIP
    ['collection', 'collection']
    """
    settings = Settings(n_colors=n_colors, **settings)
    settings.check()
    srcs = [location.normalize(s) for s in srcs]
    if not srcs:
        raise ParameterError("`srcs` names no image")
    outdir = location.normalize(outdir)
    names = [posixpath.splitext(location.name(s))[0] + ".zarr" for s in srcs]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise BigquantError(f"two sources would both be written to {outdir}/{twice[0]}")
    dsts = [f"{outdir}/{name}" for name in names]
    for src, dst in zip(srcs, dsts, strict=True):
        if src == dst:
            raise BigquantError(f"{dst}: the output would replace its own source")
        Output(dst, "store").check_absent(overwrite)
    images = [open_image(src, chunks=settings.chunks) for src in srcs]
    nodata = [_nodata(image) for image in images]
    first = images[0].data
    for image, value in zip(images, nodata, strict=True):
        settings.check_image(image.data, value)
        if (image.data.shape[2], image.data.dtype) != (first.shape[2], first.dtype):
            raise BigquantError(
                f"{image.path} has {image.data.shape[2]} channel(s) of {image.data.dtype}, "
                f"{images[0].path} {first.shape[2]} of {first.dtype}: images sharing a codebook "
                "need the same"
            )
    if not location.is_url(outdir):
        os.makedirs(outdir, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # Every store claimed before the fit: a second run into the same outputs stops at once.
        for dst in dsts:
            stack.enter_context(Output(dst).claim(take_stale=overwrite))
        stack.enter_context(scheduler(client, workers=workers))
        if codebook is not None:
            shared = _given(codebook)
        else:
            samplings = [image.with_chunks(SAMPLE_BLOCK) for image in images]
            fit = _fit(samplings, nodata, settings, show_progress)
            origin = {"kind": "collection", "paths": [image.path for image in images],
                      "n_colors_requested": n_colors, "sample_size": fit.n_samples,
                      "n_iter": fit.n_iter}  # fmt: skip
            shared = GivenCodebook(fit.codebook, origin)
        active = ready()  # a local cluster has started while the codebook was fitted here
        run = {"overwrite": overwrite, "resume": False, "client": active, "workers": None,
               "show_progress": show_progress}  # fmt: skip
        return [
            _compress(image, dst, settings, shared, **run)
            for image, dst in zip(images, dsts, strict=True)
        ]


def _given(codebook) -> GivenCodebook:
    """A codebook given as a path or URL, an array, or already read."""
    if isinstance(codebook, GivenCodebook):
        return codebook
    if isinstance(codebook, (str, os.PathLike)):
        return load_codebook(codebook)
    colors = np.asarray(codebook)
    return GivenCodebook(colors[:, None] if colors.ndim == 1 else colors, {"kind": "array"})


def _nodata(image: Image) -> float | None:
    """The image's nodata value, where its pixels can hold it."""
    value = image.nodata
    dtype = image.data.dtype
    if value is None or dtype.kind == "f":
        return value
    info = np.iinfo(dtype)
    if math.isnan(value) or value != int(value) or not info.min <= value <= info.max:
        log.warning("ignoring nodata %s: no %s pixel can hold it", value, dtype)
        return None
    return value


def _start(
    tmp: str,
    image: Image,
    data,
    sampling,
    settings: Settings,
    run: dict,
    nodata: float | None,
    applied: tuple | None,
    show_progress: bool,
) -> PartialStore:
    """A fresh run: fit the codebook on a sample (unless ``applied``: the colours of a given
    codebook and their origin), and create the unfinished store."""
    if applied is None:
        fit, origin = _fit([sampling], [nodata], settings, show_progress), None
    else:
        fit, origin = FitResult(applied[0], 0, 0), applied[1]
        log.info("applying the %d colours of %s", len(fit.codebook), origin_text(origin))
    codebook = fit.codebook
    if nodata is not None:  # one more row, reserved for pixels without data
        codebook = np.vstack([codebook, np.full((1, codebook.shape[1]), nodata, codebook.dtype)])
    meta = StoreMeta(
        source=SourceInfo.of(image, data, nodata),
        n_colors_requested=settings.n_colors if applied is None else len(fit.codebook),
        n_colors=len(fit.codebook),
        nodata_label=None if nodata is None else len(fit.codebook),
        codebook_from=origin,
        seed=settings.seed,
        sample_size=fit.n_samples,
        max_iter=settings.max_iter,
        space=settings.space,
        dither=settings.dither,
        n_iter=fit.n_iter,
        run=run,
    )
    location.remove(tmp)  # a stale unfinished run, not resumed
    unit = write_unit(
        data.shape[:2], run["chunks"], margin(settings.dither), data.shape[2] * data.dtype.itemsize
    )
    return create_store(
        tmp, run["chunks"], codebook, meta, zarr_format=settings.zarr_format, unit=unit
    )


def _in_units(image: Image, data, unit: int):
    """``data`` (in label chunks) in blocks of ``unit`` x ``unit`` chunks: the write units.

    Read as such from a file where its tiles allow, so that each unit's read stays one
    task, fused into its write task; else rechunked.
    """
    if unit == 1:
        return data
    sides = tuple(min(unit * c[0], n) for c, n in zip(data.chunks[:2], data.shape, strict=False))
    if image.rechunked is not None:
        blocks = image.with_chunks(max(sides))
        if (blocks.chunks[0][0], blocks.chunks[1][0]) == sides:
            return regular_chunks(blocks)
    return data.rechunk((*sides, -1))


def _fit(samplings: list, nodata: list, settings: Settings, show_progress: bool) -> FitResult:
    """One codebook fitted to the images of ``samplings`` (each chunked for sampling)."""
    started = time.perf_counter()
    with progress("sampling", show_progress):
        fit = fit_collection(
            samplings,
            settings.n_colors,
            sample_size=settings.sample_size,
            seed=settings.seed,
            max_iter=settings.max_iter,
            space=settings.space,
            nodata=nodata,
        )
    log.info(
        "fitted %d colours%s on %d pixels in %d iterations (%.1f s)",
        len(fit.codebook),
        "" if len(samplings) == 1 else f" to {len(samplings)} images",
        fit.n_samples,
        fit.n_iter,
        time.perf_counter() - started,
    )
    return fit


def _with_quality(meta: StoreMeta, stats, shape) -> StoreMeta:
    """``meta`` with the errors and colour counts summed from the chunks' stats.

    Pixels without data count in neither the errors nor PSNR.
    """
    height, width, n_channels = shape
    sse, delta_e, counts = total_stats(stats)
    n_data = height * width - (0 if meta.nodata_label is None else int(counts[meta.nodata_label]))
    mse = sse / (n_data * n_channels) if n_data else 0.0
    return dataclasses.replace(
        meta,
        mse=mse,
        # JSON has no infinity: a lossless result (MSE 0) records PSNR as null.
        psnr=None if mse == 0 else psnr(mse, meta.source.peak),
        # Mean ΔE_OK (see bigquant.kernels.color), for RGB images only.
        delta_e=None if math.isnan(delta_e) else delta_e,
        counts=counts.tolist(),
    )


def _resumable(output: Output, run: dict) -> PartialStore | Store | None:
    """What an earlier run with the same ``run`` parameters left at ``.DST.partial``.

    An unfinished store; or a finished one, when the run was cut short while
    moving it into place; or None when there is nothing.
    """
    tmp = output.partial
    if not location.exists(tmp):
        log.warning("nothing to resume at %s: starting afresh", tmp)
        return None
    found = open_partial(tmp)
    if found is None:
        with contextlib.suppress(BigquantError):
            found = open_store(tmp)
    if found is None or set(found.meta.run) != set(run):
        raise ParameterError(
            f"cannot resume {tmp}: it is not an unfinished store of this version of bigquant; "
            "run without `resume` to start afresh"
        )
    if found.meta.run != run:
        names = Settings.identity_names()
        changed = sorted(names[k] for k in run if found.meta.run.get(k) != run[k])
        raise ParameterError(
            f"cannot resume {tmp}: it was started with a different {', '.join(changed)}; "
            "run without `resume` to start afresh"
        )
    return found
