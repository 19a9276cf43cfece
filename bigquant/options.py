"""Options the ``bigquant`` commands share, in the style of rasterio's ``rio/options.py``.

Defaults and choices come from `bigquant.defaults`, which the library's
signatures use too. Each option's destination is the library's parameter
name, so a `ParameterError` about ``n_colors`` is shown as one about
``--colors`` (see `bigquant.cli`).
"""

from __future__ import annotations

import click

from . import defaults

overwrite = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the output if it exists and is what the command writes (a bigquant store, "
    "or an image file of its kind), once the new one is complete.",
)
verbose = click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
quiet = click.option("-q", "--quiet", count=True, help="Less log output, no progress bar.")


def _number(*decls: str, default: int, help: str):
    """An option taking a whole number, its default shown in ``--help``."""
    return click.option(*decls, type=int, default=default, show_default=True, help=help)


def _choice(*decls: str, choices, help: str, callback=None):
    """An option taking one of ``choices`` (strings), the first by default."""
    return click.option(
        *decls,
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        callback=callback,
        help=help,
    )


n_colors = _number(
    "-c", "--colors", "n_colors", default=defaults.COLORS,
    help=f"Number of colours K (1 to {defaults.MAX_COLORS}).",
)  # fmt: skip
sample_size = _number(
    "-s", "--sample", "sample_size", default=defaults.SAMPLE,
    help="Pixels sampled uniformly to fit the codebook.",
)  # fmt: skip
seed = _number("--seed", default=defaults.SEED, help="Random seed: same seed, same result.")
chunks = click.option(
    "--chunks",
    type=int,
    default=None,
    help=f"Chunk side in pixels, rounded to whole TIFF tiles/strips [default: {defaults.CHUNK}].",
)
max_iter = _number("--max-iter", default=defaults.MAX_ITER, help="Most dask-ml k-means iterations.")
space = _choice(
    "--space", choices=defaults.SPACES,
    help="Colour space to fit and assign in (oklab/lab: perceptual, RGB images only).",
)  # fmt: skip
dither = _choice(
    "-d", "--dither", choices=("none", *defaults.DITHERS),
    callback=lambda ctx, param, value: None if value == "none" else value,
    help="Dither the colours: ordered (Bayer) or floyd-steinberg (error diffusion).",
)  # fmt: skip
zarr_format = _choice(
    "--zarr-format", choices=[str(f) for f in defaults.ZARR_FORMATS],
    callback=lambda ctx, param, value: int(value),
    help="Zarr format of the store (2 for older readers).",
)  # fmt: skip
pyramid = click.option(
    "--pyramid",
    is_flag=True,
    help="Also write halved label levels with OME-Zarr metadata (napari, OME-Zarr viewers).",
)


def settings(command):
    """Every field of `bigquant.settings.Settings` as an option, in the fields' order.

    A field without an option here fails at import, so the command cannot
    miss one.
    """
    import dataclasses

    from .settings import Settings

    for field in reversed(dataclasses.fields(Settings)):  # the first decorator applied is last
        command = globals()[field.name](command)
    return command


scheduler = click.option(
    "--scheduler",
    "client",
    metavar="ADDRESS",
    help="Run on the dask scheduler at ADDRESS (tcp://host:8786).",
)
workers = click.option(
    "-w", "--workers", type=int, help="Run on a local cluster of N worker processes."
)
max_size = _number(
    "-m", "--max-size", default=defaults.PREVIEW_SIZE, help="Longest side of the preview in pixels."
)
sort = _choice(
    "--sort", choices=defaults.PALETTE_SORTS,
    help="Order of the swatches: dark to light, or most pixels first.",
)  # fmt: skip
layout = _choice(
    "--layout", choices=defaults.TILE_LAYOUTS,
    help="deepzoom: OUT.dzi + OUT_files/LEVEL/COL_ROW.png (OpenSeadragon); "
    "xyz: OUT/Z/X/Y.png, 256-pixel tiles without overlap (Leaflet L.CRS.Simple, OpenLayers).",
)  # fmt: skip
tile_size = _number(
    "--tile-size",
    default=defaults.TILE_SIZE,
    help="Deep Zoom tile side in pixels, without overlap.",
)
overlap = _number(
    "--overlap",
    default=defaults.TILE_OVERLAP,
    help="Pixels a Deep Zoom tile repeats of each neighbour.",
)
overwrite_tiles = click.option(
    "--overwrite",
    is_flag=True,
    help="Delete a finished tile set at OUT (or another run's unfinished one) and write it anew.",
)
port = _number("--port", default=0, help="Port on 127.0.0.1 to serve the page on (0: a free one).")
browser = click.option(
    "--browser/--no-browser",
    "open_browser",
    default=True,
    show_default=True,
    help="Open the page in the default web browser.",
)
