"""The ``bigquant`` command: a thin layer over the Python API.

Data goes to stdout, logs and progress bars to stderr. Errors a user can fix
print one line and exit 1; usage errors exit 2 (click's convention).
Heavy imports happen inside the commands so that ``bigquant --help`` is quick.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import json
import logging
import math
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from . import __version__, options
from .cluster import NOTICE_LOGGERS
from .errors import BigquantError, ParameterError

log = logging.getLogger("bigquant")


class _Once(logging.Filter):
    """Let each distinct message through once (a file's notice, repeated by every tile read)."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


#: The loggers distributed sets up, without -v: critical lines only. Its defaults print a
#: worker's failed task (already the command's one-line error) with its traceback.
_DISTRIBUTED_QUIET = dict.fromkeys(
    ["distributed", "distributed.client", "distributed.gc", "bokeh", "tornado.application"],
    "critical",
)


@contextlib.contextmanager
def _logging(verbose: int, quiet: int):
    """Log to stderr at the chosen level while a command runs; put things back afterwards.

    The libraries' own notices (tifffile's logger, Python warnings) reach
    stderr only with ``-v``, prefixed with where they come from; every notice once.
    distributed's reach it only with ``-v`` too, as distributed prints them.
    """
    import warnings

    import dask

    once = _Once()
    ours = logging.StreamHandler(sys.stderr)
    ours.setFormatter(logging.Formatter("bigquant: %(message)s"))
    theirs = logging.StreamHandler(sys.stderr)
    theirs.setFormatter(logging.Formatter("bigquant: %(name)s: %(message)s"))
    loggers = {
        log: ours,
        **dict.fromkeys(map(logging.getLogger, NOTICE_LOGGERS), theirs),
        # Where a dask client's event loop reports tasks it dropped, as on Ctrl-C.
        logging.getLogger("asyncio"): theirs,
    }
    saved = {lg: (lg.handlers[:], lg.level, lg.propagate) for lg in loggers}
    for lg, handler in loggers.items():
        handler.filters[:] = [once]
        lg.handlers[:] = [handler] if lg is log or verbose > 0 else [logging.NullHandler()]
        lg.propagate = False
    log.setLevel(max(logging.DEBUG, logging.INFO + 10 * (quiet - verbose)))
    # distributed gives its loggers their levels and a stderr handler of its own when it is
    # imported: in this process when a command first needs it, in each local worker
    # process as it starts. Both take the levels from dask's config, which a worker reads
    # from the environment it is started with. A user's own logging config stays as it is.
    distributed = {}
    own = dask.config.get("logging", None) or dask.config.get("logging-file-config", None)
    if verbose <= 0 and not own:
        distributed = {
            "logging": _DISTRIBUTED_QUIET,
            "distributed.nanny.pre-spawn-environ.DASK_LOGGING": repr(_DISTRIBUTED_QUIET),
        }
    try:
        with warnings.catch_warnings(), dask.config.set(distributed):
            logging.captureWarnings(True)
            try:
                yield
            finally:
                logging.captureWarnings(False)
                for lg, (handlers, level, propagate) in saved.items():
                    lg.handlers[:], lg.propagate = handlers, propagate
                    lg.setLevel(level)
    finally:
        # Leaving dask.config.set deletes each section it created: when distributed was
        # first imported inside, that is its whole "distributed" section, defaults and
        # all, and every later Client in this process fails (KeyError: 'distributed').
        # The libraries' defaults are put back where missing; nothing set is overridden.
        for defaults in dask.config.defaults:
            dask.config.update(dask.config.config, copy.deepcopy(defaults), priority="old")


class Terminated(KeyboardInterrupt):
    """SIGTERM, as a batch scheduler, Kubernetes or ``timeout`` stops a job.

    A `KeyboardInterrupt`, so that dask and the library handle it exactly as
    Ctrl-C: an unfinished store is kept, and the line saying how to resume it
    is printed.
    """


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM into `Terminated` while a command runs; put the old handler back after.

    Only the main thread can set a handler (a command run from another thread
    keeps the process's).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _command(func):
    """Shared -v/-q options, and one-line errors instead of tracebacks."""

    @options.verbose
    @options.quiet
    @functools.wraps(func)
    def wrapper(verbose: int, quiet: int, **kwargs):
        from .progress import default_enabled

        with _logging(verbose, quiet), _sigterm_as_interrupt():
            try:
                return func(show_progress=default_enabled(bool(quiet)), **kwargs)
            except ParameterError as exc:
                _fail(exc.render(_flag))
            except BigquantError as exc:
                _fail(str(exc))
            except Terminated:
                # 128 + SIGTERM, the status the shell and schedulers expect of a terminated job.
                _fail("terminated", code=128 + signal.SIGTERM)
            except KeyboardInterrupt:
                _fail("interrupted", code=130)
            except OSError as exc:
                _fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
            except MemoryError:
                # Named only where the command has them: decompress has neither.
                hints = [flag for flag in map(_flag, ("chunks", "sample_size")) if flag]
                _fail("out of memory" + (f": try smaller {' or '.join(hints)}" if hints else ""))

    return wrapper


def _flag(parameter: str) -> str | None:
    """How the running command spells a library parameter: its option's flag, or its argument."""
    for param in click.get_current_context().command.params:
        if param.name == parameter:
            if isinstance(param, click.Argument):
                return param.human_readable_name
            return max(param.opts, key=len)
    return None


def _fail(message: str, code: int = 1):
    click.echo(f"bigquant: error: {message}", err=True)
    sys.exit(code)


def run() -> None:
    """The ``bigquant`` console script: `main` in a process of its own.

    It sets what only a process's owner should, Python's garbage collector,
    which is not the library's to touch. A run's imports and task graphs make
    hundreds of thousands of long-lived objects that each full collection
    walks again, holding the GIL: collections come every 100 000 allocations
    instead of every 700, and the objects left at the end are frozen, so that
    interpreter shutdown does not walk them once more. Together about 2 s of a
    16 s compress of 100 megapixels (README, "Benchmark").
    """
    gc.set_threshold(100_000)
    try:
        main()
    finally:
        gc.freeze()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bigquant")
def main():
    """Colour-quantize images far larger than memory with k-means.

    compress turns an image into a Zarr store of per-pixel palette indices
    plus a K-colour codebook; decompress turns a store back into an image.
    """


@main.command()
@click.argument("paths", metavar="SRC... DST", nargs=-1, required=True)
@click.option(
    "--into",
    metavar="OUTDIR",
    help="Fit one codebook to all the SRCs and write OUTDIR/NAME.zarr for each, sharing it.",
)
@click.option(
    "--codebook",
    metavar="FROM",
    help="Apply this codebook instead of fitting one: a bigquant store, a palette TIFF, "
    "or a .gpl, .hex, .csv or .json palette.",
)
@options.settings
@options.overwrite
@click.option(
    "--resume",
    is_flag=True,
    help="Finish the store an interrupted run with the same parameters left behind.",
)
@options.scheduler
@options.workers
@_command
def compress(paths, into, **kwargs):
    """Quantize image SRC to K colours and write the store DST.

    SRC and DST are local paths or fsspec URLs (s3://… with s3fs installed).
    SRC is a TIFF (tiled or striped, BigTIFF, OME/pyramidal: full resolution),
    a Zarr array, or a small PNG/JPEG. With --into, every path is a SRC.
    """
    from .pipeline import compress as run
    from .pipeline import compress_many

    started = time.perf_counter()
    if into is None:
        if len(paths) != 2:
            raise click.UsageError("give one SRC and one DST (or several SRCs with --into)")
        written = {paths[1]: run(*paths, **kwargs)}
    else:
        if kwargs.pop("resume"):
            raise click.UsageError("--resume works on one store: resume each SRC DST on its own")
        metas = compress_many(paths, into, **kwargs)
        written = {f"{into}/{Path(src).stem}.zarr": m for src, m in zip(paths, metas, strict=True)}
    for dst, meta in written.items():
        log.info(
            "wrote %s: %d colours, PSNR %s%s, %.1f s",
            dst,
            meta.n_colors,
            "inf" if meta.psnr is None else f"{meta.psnr:.2f} dB",
            "" if meta.delta_e is None else f", mean ΔE_OK {meta.delta_e:.2f}",
            time.perf_counter() - started,
        )


@main.command()
@click.argument("store")
@click.argument("out")
@click.option(
    "-p",
    "--palette",
    is_flag=True,
    help="Write an indexed-colour TIFF: labels as pixels, the codebook as colour map.",
)
@click.option(
    "--overviews/--no-overviews",
    default=True,
    show_default=True,
    help="Internal overviews in a TIFF output, for GIS tools (costs time: see README).",
)
@options.overwrite
@_command
def decompress(store, out, **kwargs):
    """Write the quantized image of STORE to OUT (.tif/.tiff or .zarr)."""
    from .export import decompress as run

    started = time.perf_counter()
    run(store, out, **kwargs)
    log.info("wrote %s in %.1f s", out, time.perf_counter() - started)


@main.command()
@click.argument("store")
@click.argument("out")
@options.layout
@options.tile_size
@options.overlap
@options.overwrite_tiles
@options.scheduler
@options.workers
@_command
def tiles(store, out, **kwargs):
    """Write the quantized image of STORE as a pyramid of PNG web tiles to OUT (a folder or s3://).

    Every tile is an indexed PNG with the store's codebook as its one colour
    table (nodata transparent), so tiles never disagree; stores of more than
    256 colours give RGB tiles. Lower levels are the store's label pyramid,
    or the same 2x2 mode of the labels. Run again after an interruption, it
    writes only the tiles still missing.
    """
    from .tiles import write_tiles

    started = time.perf_counter()
    n = write_tiles(store, out, **kwargs)
    log.info("wrote %d tiles to %s in %.1f s", n, out, time.perf_counter() - started)


@main.command()
@click.argument("store")
@click.option(
    "--tiles",
    metavar="DZI",
    help="Serve the tiles of this `bigquant tiles` Deep Zoom output of STORE (OUT.dzi, a "
    "path or an s3:// URL), rendering only those it lacks.",
)
@options.port
@options.browser
@_command
def view(store, show_progress, **kwargs):
    """Show STORE in a web page: pan and zoom, its palette, each colour's pixels, the source.

    Serves the page on 127.0.0.1 (its address goes to stdout) until Ctrl-C
    (or SIGTERM), which stops it with exit status 0.
    Tiles are rendered as the page asks for them; a store without a label
    pyramid gets one in a temporary folder first, in the background.
    """
    from .view import view_store

    serving = []

    def ready(url: str) -> None:
        serving.append(url)
        click.echo(url)
        log.info("serving %s at %s (Ctrl-C stops)", store, url)

    # Ctrl-C (or SIGTERM, from a service manager) is how a server is stopped, not a failure:
    # once it was serving, the command ends with status 0 (`view_store` has stopped the
    # server and removed its levels). Before that, it is an interrupted command like any.
    try:
        view_store(store, ready=ready, **kwargs)
    except KeyboardInterrupt:  # and `Terminated`
        if not serving:
            raise
        log.info("stopped serving %s", store)


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    is_flag=True,
    help="Also read every label and check it against the codebook (reads the whole store).",
)
@_command
def info(store, as_json, check, show_progress):
    """Describe the bigquant store STORE (from its metadata, unless --check)."""
    from dask.utils import format_bytes

    from .render import terminal_swatches
    from .store import open_store

    opened = open_store(store)
    if check:
        opened.check(show_progress)
    s = opened.summary()
    if as_json:
        click.echo(json.dumps(s, indent=2, allow_nan=False))
        return
    psnr = "inf" if s["psnr"] is None else f"{s['psnr']:.2f} dB"
    h, w, c = s["shape"]
    lines = [
        f"store        {s['path']}",
        f"image        {h} x {w} pixels ({h * w / 1e6:.1f} MP), {c} channel(s), {s['dtype']}, "
        f"{s['photometric']}",
        f"source       {s['source']}"
        + (f" (read as {s['converted']})" if s["converted"] else "")
        + ("" if s["orientation"] == 1 else f", TIFF orientation {s['orientation']}"),
        *(
            [f"nodata       {s['nodata']}, label {s['nodata_label']} (left out of the fit)"]
            if s["nodata_label"] is not None
            else []
        ),
        f"colours      {s['n_colors']} " + opened.meta.codebook_text(),
        f"quality      MSE {s['mse']:.4g}, PSNR {psnr}"
        + ("" if s["delta_e"] is None else f", mean ΔE_OK {s['delta_e']:.2f}")
        + f" (fitted in {s['space']})",
        f"size         {format_bytes(s['stored_bytes'])} stored, {format_bytes(s['raw_bytes'])} "
        f"raw, ratio {s['compression_ratio']:.1f}:1",
        *(
            [f"pyramid      {', '.join(s['pyramid'])} (OME-Zarr multiscales)"]
            if s["pyramid"]
            else []
        ),
        *([_georef_line(s["crs"], s["geotransform"])] if s["geotransform"] or s["crs"] else []),
        *(["checked      every label is a codebook colour"] if check else []),
        "palette      most frequent colours first (share of pixels)",
        terminal_swatches(
            opened.codebook[: s["n_colors"]], s["counts"] and s["counts"][: s["n_colors"]]
        ),
        "codebook     index: value per channel (pixels)",
    ]
    counts = s["counts"] or [None] * len(s["codebook"])
    width = len(str(len(s["codebook"]) - 1))
    for i, (row, n) in enumerate(zip(s["codebook"], counts, strict=True)):
        values = " ".join(_format_value(v) for v in row)
        lines.append(
            f"  {i:>{width}}: {values}"
            + (f"  ({n})" if n is not None else "")
            + ("  nodata" if i == s["nodata_label"] else "")
        )
    click.echo("\n".join(lines))


@main.command()
@click.argument("store")
@click.argument("out")
@options.max_size
@options.overwrite
@_command
def preview(store, out, **kwargs):
    """Render a downsampled view of the quantized image of STORE to OUT (.png).

    Each preview pixel is the mean colour of a block of the image; the labels
    are read chunk by chunk, never the whole image at once.
    """
    from .render import preview as run

    height, width = run(store, out, **kwargs)
    log.info("wrote %s (%d x %d)", out, width, height)


@main.command()
@click.argument("store")
@click.argument("out")
@options.sort
@options.overwrite
@_command
def palette(store, out, sort, overwrite, show_progress):
    """Draw the codebook of STORE as a swatch image OUT (.png), with each colour's share."""
    from .render import palette_image
    from .store import open_store

    opened = open_store(store)
    n = palette_image(opened, out, sort=sort, overwrite=overwrite)
    log.info("wrote %s (%d colours %s)", out, n, opened.meta.codebook_text())


def _georef_line(crs: str | None, transform: list[float] | None) -> str:
    line = f"georef       {crs or 'no CRS'}"
    if transform:
        x0, dx, rx, y0, ry, dy = transform
        line += f", origin ({x0:.10g}, {y0:.10g}), pixel size {dx:.10g} x {dy:.10g}"
        if rx or ry:
            line += f", rotation {rx:.10g} / {ry:.10g}"
    return line


def _format_value(v) -> str:
    if v is None:  # NaN in the codebook's JSON
        return "nan"
    return str(v) if isinstance(v, int) else f"{v:.6g}"


@main.command()
@click.option(
    "-m",
    "--megapixels",
    type=float,
    default=100,
    show_default=True,
    help="Size of the generated input.",
)
@options.n_colors
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the input and store here [default: a temporary directory, removed].",
)
@_command
def demo(megapixels, n_colors, workdir, show_progress):
    """Compress a generated mosaic of real photographs and report the result.

    The input is a tiled, zlib-compressed TIFF of scikit-learn's sample
    photographs; the results table goes to stdout.
    """
    from dask.utils import format_bytes

    from .mosaic import write_mosaic
    from .pipeline import compress as run
    from .store import open_store

    if megapixels <= 0:
        raise ParameterError(f"`megapixels` must be positive, not {megapixels}")
    side = max(1, round(math.sqrt(megapixels * 1e6)))
    with tempfile.TemporaryDirectory() as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        src, dst = where / "demo.tif", where / "demo.zarr"
        log.info("writing a %d x %d mosaic of photographs to %s", side, side, src)
        write_mosaic(src, side, side)
        started = time.perf_counter()
        meta = run(src, dst, n_colors, overwrite=True, show_progress=show_progress)
        seconds = time.perf_counter() - started
        stored = open_store(dst).stored_bytes()
        raw = side * side * 3
        click.echo(
            f"input        {side} x {side} RGB ({side * side / 1e6:.0f} MP), "
            f"{format_bytes(src.stat().st_size)} as zlib TIFF, {format_bytes(raw)} raw\n"
            f"compress     {seconds:.1f} s ({side * side / 1e6 / seconds:.1f} MP/s), "
            f"{meta.n_colors} colours\n"
            f"store        {format_bytes(stored)}, ratio {raw / stored:.1f}:1 against raw pixels\n"
            f"quality      PSNR {meta.psnr:.2f} dB"
        )
