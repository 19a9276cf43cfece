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
    help="Replace the output if it exists, once the new one is complete.",
)
verbose = click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
quiet = click.option("-q", "--quiet", count=True, help="Less log output, no progress bar.")

n_colors = click.option(
    "-c",
    "--colors",
    "n_colors",
    type=int,
    default=defaults.COLORS,
    show_default=True,
    help=f"Number of colours K (1 to {defaults.MAX_COLORS}).",
)
sample_size = click.option(
    "-s",
    "--sample",
    "sample_size",
    type=int,
    default=defaults.SAMPLE,
    show_default=True,
    help="Pixels sampled uniformly to fit the codebook.",
)
seed = click.option(
    "--seed",
    type=int,
    default=defaults.SEED,
    show_default=True,
    help="Random seed: same seed, same result.",
)
chunks = click.option(
    "--chunks",
    type=int,
    default=None,
    help=f"Chunk side in pixels, rounded to whole TIFF tiles/strips [default: {defaults.CHUNK}].",
)
max_iter = click.option(
    "--max-iter",
    type=int,
    default=defaults.MAX_ITER,
    show_default=True,
    help="Most dask-ml k-means iterations.",
)
space = click.option(
    "--space",
    type=click.Choice(defaults.SPACES),
    default=defaults.SPACES[0],
    show_default=True,
    help="Colour space to fit and assign in (oklab/lab: perceptual, RGB images only).",
)
dither = click.option(
    "-d",
    "--dither",
    type=click.Choice(("none", *defaults.DITHERS)),
    default="none",
    show_default=True,
    callback=lambda ctx, param, value: None if value == "none" else value,
    help="Dither the colours: ordered (Bayer) or floyd-steinberg (error diffusion).",
)
zarr_format = click.option(
    "--zarr-format",
    type=click.Choice([str(f) for f in defaults.ZARR_FORMATS]),
    default=str(defaults.ZARR_FORMATS[0]),
    show_default=True,
    callback=lambda ctx, param, value: int(value),
    help="Zarr format of the store (2 for older readers).",
)
scheduler = click.option(
    "--scheduler",
    "client",
    metavar="ADDRESS",
    help="Run on the dask scheduler at ADDRESS (tcp://host:8786).",
)
workers = click.option(
    "-w", "--workers", type=int, help="Run on a local cluster of N worker processes."
)
max_size = click.option(
    "-m",
    "--max-size",
    type=int,
    default=defaults.PREVIEW_SIZE,
    show_default=True,
    help="Longest side of the preview in pixels.",
)
sort = click.option(
    "--sort",
    type=click.Choice(defaults.PALETTE_SORTS),
    default=defaults.PALETTE_SORTS[0],
    show_default=True,
    help="Order of the swatches: dark to light, or most pixels first.",
)
