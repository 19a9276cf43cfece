"""The ``bigquant`` command: a thin layer over the Python API.

Data goes to stdout, logs and progress bars to stderr. Errors a user can fix
print one line and exit 1; usage errors exit 2 (click's convention).
Heavy imports happen inside the commands so that ``bigquant --help`` is quick.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import click

from . import __version__
from .errors import BigquantError

log = logging.getLogger("bigquant")


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO + 10 * (quiet - verbose)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bigquant: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(max(logging.DEBUG, level))
    log.propagate = False


def _command(func):
    """Shared -v/-q options, and one-line errors instead of tracebacks."""

    @click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
    @click.option("-q", "--quiet", count=True, help="Less log output, no progress bar.")
    @functools.wraps(func)
    def wrapper(verbose: int, quiet: int, **kwargs):
        _setup_logging(verbose, quiet)
        try:
            return func(show_progress=_progress_enabled(quiet), **kwargs)
        except BigquantError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", code=130)
        except OSError as exc:
            _fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        except MemoryError:
            _fail("out of memory: try smaller --chunks or --sample")

    return wrapper


def _fail(message: str, code: int = 1):
    click.echo(f"bigquant: error: {message}", err=True)
    sys.exit(code)


def _progress_enabled(quiet: int) -> bool:
    from .progress import default_enabled

    return default_enabled(bool(quiet))


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bigquant")
def main():
    """Colour-quantize images far larger than memory with k-means.

    compress turns an image into a Zarr store of per-pixel palette indices
    plus a K-colour codebook; decompress turns a store back into an image.
    """


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "-c",
    "--colors",
    "n_colors",
    type=int,
    default=256,
    show_default=True,
    help="Number of colours K (1 to 65536).",
)
@click.option(
    "-s",
    "--sample",
    "sample_size",
    type=int,
    default=250_000,
    show_default=True,
    help="Pixels sampled uniformly to fit the codebook.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed: same seed, same result."
)
@click.option(
    "--chunks",
    type=int,
    default=None,
    help="Chunk side in pixels, rounded to whole TIFF tiles/strips [default: 2048].",
)
@click.option(
    "--max-iter", type=int, default=10, show_default=True, help="Most dask-ml k-means iterations."
)
@click.option(
    "--space",
    type=click.Choice(["rgb", "oklab", "lab"]),
    default="rgb",
    show_default=True,
    help="Colour space to fit and assign in (oklab/lab: perceptual, RGB images only).",
)
@click.option(
    "-d",
    "--dither",
    type=click.Choice(["none", "ordered", "floyd-steinberg"]),
    default="none",
    show_default=True,
    help="Dither the colours: ordered (Bayer) or floyd-steinberg (error diffusion).",
)
@click.option(
    "--pyramid",
    is_flag=True,
    help="Also write halved label levels with OME-Zarr metadata (napari, OME-Zarr viewers).",
)
@click.option(
    "--zarr-format",
    type=click.Choice(["2", "3"]),
    default="3",
    show_default=True,
    help="Zarr format of the store (2 for older readers).",
)
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option(
    "--resume",
    is_flag=True,
    help="Finish the store an interrupted run with the same parameters left behind.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run on the dask scheduler at ADDRESS (tcp://host:8786).",
)
@click.option("-w", "--workers", type=int, help="Run on a local cluster of N worker processes.")
@_command
def compress(
    src,
    dst,
    n_colors,
    sample_size,
    seed,
    chunks,
    max_iter,
    space,
    dither,
    pyramid,
    zarr_format,
    overwrite,
    resume,
    scheduler,
    workers,
    show_progress,
):
    """Quantize image SRC to K colours and write the store DST.

    SRC and DST are local paths or fsspec URLs (s3://… with s3fs installed).
    SRC is a TIFF (tiled or striped, BigTIFF, OME/pyramidal: full resolution),
    a Zarr array, or a small PNG/JPEG.
    """
    from .pipeline import compress as run

    started = time.perf_counter()
    meta = run(
        src,
        dst,
        n_colors,
        sample_size=sample_size,
        seed=seed,
        chunks=chunks,
        max_iter=max_iter,
        space=space,
        dither=None if dither == "none" else dither,
        pyramid=pyramid,
        zarr_format=int(zarr_format),
        overwrite=overwrite,
        resume=resume,
        client=scheduler,
        workers=workers,
        show_progress=show_progress,
    )
    psnr = meta["psnr"]
    delta_e = "" if meta["delta_e"] is None else f", mean ΔE_OK {meta['delta_e']:.2f}"
    log.info(
        "wrote %s: %d colours, PSNR %s%s, %.1f s",
        dst,
        meta["n_colors"],
        "inf" if psnr is None else f"{psnr:.2f} dB",
        delta_e,
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
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@_command
def decompress(store, out, palette, overwrite, show_progress):
    """Write the quantized image of STORE to OUT (.tif/.tiff or .zarr)."""
    from .export import decompress as run

    started = time.perf_counter()
    run(store, out, palette=palette, overwrite=overwrite, show_progress=show_progress)
    log.info("wrote %s in %.1f s", out, time.perf_counter() - started)


def store_summary(store) -> dict:
    """What ``bigquant info`` reports. Reads every label once, to check them."""
    from .label import lookup

    meta = store.meta
    labels = store.labels_dask()
    # A full pass over the labels: proves none points past the codebook.
    lookup(labels.max(keepdims=False).compute().reshape(1), store.codebook)
    height, width, channels = store.shape
    raw = height * width * channels * store.codebook.dtype.itemsize
    stored = store.stored_bytes()
    return {
        "path": str(store.path),
        "shape": [height, width, channels],
        "dtype": str(store.codebook.dtype),
        "photometric": meta["source"].get("photometric"),
        "source": meta["source"].get("path"),
        "n_colors": len(store.codebook),
        "n_colors_requested": meta.get("n_colors_requested"),
        "seed": meta.get("seed"),
        "sample_size": meta.get("sample_size"),
        "n_iter": meta.get("n_iter"),
        "space": meta.get("space", "rgb"),
        "mse": meta.get("mse"),
        "psnr": meta.get("psnr"),
        "delta_e": meta.get("delta_e"),
        "pyramid": meta.get("pyramid"),
        "stored_bytes": stored,
        "raw_bytes": raw,
        "compression_ratio": raw / stored if stored else None,
        "codebook": store.codebook.tolist(),
        "counts": meta.get("counts"),
    }


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_command
def info(store, as_json, show_progress):
    """Describe the bigquant store STORE."""
    import numpy as np

    from .render import terminal_swatches
    from .store import open_store

    s = store_summary(open_store(store))
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    psnr = "inf" if s["psnr"] is None else f"{s['psnr']:.2f} dB"
    h, w, c = s["shape"]
    lines = [
        f"store        {s['path']}",
        f"image        {h} x {w} pixels ({h * w / 1e6:.1f} MP), {c} channel(s), {s['dtype']}, "
        f"{s['photometric']}",
        f"source       {s['source']}",
        f"colours      {s['n_colors']} ({s['n_colors_requested']} requested), fitted on "
        f"{s['sample_size']} sampled pixels in {s['n_iter']} iterations, seed {s['seed']}",
        f"quality      MSE {s['mse']:.4g}, PSNR {psnr}"
        + ("" if s["delta_e"] is None else f", mean ΔE_OK {s['delta_e']:.2f}")
        + f" (fitted in {s['space']})",
        f"size         {_human_bytes(s['stored_bytes'])} stored, {_human_bytes(s['raw_bytes'])} "
        f"raw, ratio {s['compression_ratio']:.1f}:1",
        *(
            [f"pyramid      {', '.join(s['pyramid'])} (OME-Zarr multiscales)"]
            if s["pyramid"]
            else []
        ),
        "palette      most frequent colours first (share of pixels)",
        terminal_swatches(np.asarray(s["codebook"], s["dtype"]), s["counts"]),
        "codebook     index: value per channel (pixels)",
    ]
    counts = s["counts"] or [None] * s["n_colors"]
    width = len(str(s["n_colors"] - 1))
    for i, (row, n) in enumerate(zip(s["codebook"], counts, strict=True)):
        values = " ".join(_format_value(v) for v in row)
        lines.append(f"  {i:>{width}}: {values}" + (f"  ({n})" if n is not None else ""))
    click.echo("\n".join(lines))


@main.command()
@click.argument("store")
@click.argument("out")
@click.option(
    "-m",
    "--max-size",
    type=int,
    default=2048,
    show_default=True,
    help="Longest side of the preview in pixels.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@_command
def preview(store, out, max_size, overwrite, show_progress):
    """Render a downsampled view of the quantized image of STORE to OUT (.png).

    Each preview pixel is the mean colour of a block of the image; the labels
    are read chunk by chunk, never the whole image at once.
    """
    from .render import preview as run

    height, width = run(
        store, out, max_size=max_size, overwrite=overwrite, show_progress=show_progress
    )
    log.info("wrote %s (%d x %d)", out, width, height)


@main.command()
@click.argument("store")
@click.argument("out")
@click.option(
    "--sort",
    type=click.Choice(["lightness", "count"]),
    default="lightness",
    show_default=True,
    help="Order of the swatches: dark to light, or most pixels first.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@_command
def palette(store, out, sort, overwrite, show_progress):
    """Draw the codebook of STORE as a swatch image OUT (.png), with each colour's share."""
    from .render import palette_image

    n = palette_image(store, out, sort=sort, overwrite=overwrite)
    log.info("wrote %s (%d colours)", out, n)


def _format_value(v) -> str:
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
@click.option(
    "-c",
    "--colors",
    "n_colors",
    type=int,
    default=256,
    show_default=True,
    help="Number of colours K.",
)
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
    from .mosaic import write_mosaic
    from .pipeline import compress as run
    from .store import open_store

    if megapixels <= 0:
        raise BigquantError(f"--megapixels must be positive, not {megapixels}")
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
            f"{_human_bytes(src.stat().st_size)} as zlib TIFF, {_human_bytes(raw)} raw\n"
            f"compress     {seconds:.1f} s ({side * side / 1e6 / seconds:.1f} MP/s), "
            f"{meta['n_colors']} colours\n"
            f"store        {_human_bytes(stored)}, ratio {raw / stored:.1f}:1 against raw pixels\n"
            f"quality      PSNR {meta['psnr']:.2f} dB"
        )
