"""Pictures of a store for people: a downsampled preview PNG, a palette swatch PNG, and
coloured codebook swatches for the terminal.

Everything is drawn in 8 bits per channel: uint8 values as they are, uint16 ones
divided by 257, float ones clipped to [0, 1] and scaled by 255, all rounded.
"""

from __future__ import annotations

import functools
import math
import posixpath

import numpy as np

from . import defaults, location
from .errors import BigquantError, ParameterError
from .kernels.color import lightness, to_8bit
from .kernels.downsample import block_means
from .output import Output
from .progress import compute, progress
from .store import Store, open_store

#: Pillow mode of an 8-bit image with this many channels.
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
#: OKLab lightness above which black text reads better than white (sRGB grey 128 is ~0.6).
_LIGHT = 0.6


def preview(
    store,
    out,
    *,
    max_size: int = defaults.PREVIEW_SIZE,
    overwrite: bool = False,
    show_progress: bool = False,
) -> tuple[int, int]:
    """Write a downsampled view of the quantized image of ``store`` as an 8-bit PNG.

    Parameters
    ----------
    store : path-like, URL or Store
        The store whose labels are drawn (a path is opened with `open_store`).
    out : path-like or URL
        The PNG to write (its name ends in ``.png``).
    max_size : int
        Bound on the longest side of the preview, at least 1.
    overwrite : bool
        Replace an existing ``out`` once the new file is complete.
    show_progress : bool
        A progress bar on stderr.

    Returns
    -------
    height : int
        Rows of the written preview.
    width : int
        Columns of the written preview.

    Raises
    ------
    ParameterError
        ``max_size`` below 1, or ``out`` exists and not ``overwrite`` (or,
        even with it, is not a PNG file).
    BigquantError
        ``out`` not a ``.png`` (or the store itself, in a missing directory,
        or being written by another run), a store `open_store` refuses or of
        more than 4 channels, or a label past the codebook found while
        reading.
    ClusterError
        Worker processes died while reading (on a cluster).

    Notes
    -----
    The image is shrunk by the integer factor ``f = ceil(max(Y, X) / max_size)``,
    each preview pixel being the mean colour of an ``f × f`` block (the full
    quantized image when ``f == 1``). The partial blocks at the bottom and right
    edges are kept and averaged over the pixels they have, so the preview is
    ``ceil(Y / f) × ceil(X / f)`` and covers the whole image. Reads every
    label once, chunk by chunk: memory holds one chunk's labels and the
    preview, never the image. Pixels without data (nodata) are left out of
    the means and make the preview transparent where they are. The preview is
    turned as the source's TIFF Orientation says.

    Examples
    --------
    >>> import bigquant
    >>> bigquant.preview("scan.zarr", "scan.png", max_size=1024)  # doctest: +SKIP
    (678, 1017)
    """
    if max_size < 1:
        raise ParameterError(f"`max_size` must be at least 1, not {max_size}")
    store, out = _open(store, out)
    height, width = store.labels.shape
    f = max(1, math.ceil(max(height, width) / max_size))
    source = store.meta.source
    to_8bits = functools.partial(to_8bit, dtype=store.codebook.dtype, peak=source.peak)
    labels, nodata, counts = store.labels_dask(), store.meta.nodata_label, store.meta.counts
    # Where the image has pixels without data, each block is as opaque as its share of data.
    opacity = nodata is not None and bool(counts) and counts[nodata] > 0
    image = block_means(labels, store.codebook, f, np.uint8, to_8bits, skip=nodata, opacity=opacity)
    with (
        Output(out, "png").write(overwrite=overwrite) as tmp,
        progress("preview", show_progress),
    ):
        (small,) = compute(image)
        if opacity:
            small = _with_opacity(small[:, :, :-1], small[:, :, -1:], source.extrasamples)
        _save_png(oriented(small, source.orientation), tmp)
    return small.shape[0], small.shape[1]


def _with_opacity(pixels: np.ndarray, opacity: np.ndarray, extrasamples) -> np.ndarray:
    """An 8-bit picture made as transparent as ``opacity`` (0 to 255) says."""
    if len(extrasamples) == 1 and extrasamples[0] in (1, 2):  # an alpha channel of its own
        alpha = pixels[:, :, -1:].astype(np.uint16) * opacity // 255
        return np.concatenate([pixels[:, :, :-1], alpha.astype(np.uint8)], axis=2)
    return np.concatenate([pixels, opacity], axis=2)


def oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """A ``(y, x, …)`` picture in stored order turned to display order, as TIFF Orientation
    ``orientation`` says (1 top-left, 2 top-right, …, 8 left-bottom)."""
    if orientation in (5, 6, 7, 8):  # stored rows are displayed as columns
        pixels = np.swapaxes(pixels, 0, 1)
    flip_rows = orientation in (3, 4, 7, 8)
    flip_cols = orientation in (2, 3, 6, 7)
    return pixels[:: -1 if flip_rows else 1, :: -1 if flip_cols else 1]


def palette_image(
    store, out, *, sort: str = defaults.PALETTE_SORTS[0], overwrite: bool = False
) -> int:
    """Draw the codebook of ``store`` as a PNG of square swatches, one per colour.

    Parameters
    ----------
    store : path-like, URL or Store
        The store whose codebook is drawn; no label is read.
    out : path-like or URL
        The swatches' PNG, ending in ``.png``.
    sort : {"lightness", "count"}
        Dark to light by OKLab lightness (see `lightness`), or most pixels
        first (ties by index), which needs the store's pixel counts.
    overwrite : bool
        Replace an existing ``out`` once the new file is complete.

    Returns
    -------
    int
        The number of colours drawn (not the nodata row).

    Raises
    ------
    ParameterError
        An unknown ``sort``, or ``out`` exists and not ``overwrite`` (or,
        even with it, is not a PNG file).
    BigquantError
        ``sort="count"`` for a store without pixel counts; ``out`` not a
        ``.png`` (or the store itself, in a missing directory, or being
        written by another run); a store `open_store` refuses or of more
        than 4 channels.

    Notes
    -----
    Reads the store's metadata only (codebook and counts), never its labels.
    Swatches fill a near-square grid row by row. Up to 256 colours get 48-pixel
    tiles labelled in their top-left corner with the index, share of pixels and
    pixel count (black or white text by lightness; the bottom-right corner stays free of text);
    more get plain 8-pixel tiles (65536 colours make 2048 × 2048 pixels).

    Examples
    --------
    >>> import bigquant
    >>> bigquant.palette_image("scan.zarr", "palette.png", sort="count")  # doctest: +SKIP
    256
    """
    from PIL import Image, ImageDraw, ImageFont

    if sort not in defaults.PALETTE_SORTS:
        raise ParameterError(
            f"`sort` must be one of {', '.join(defaults.PALETTE_SORTS)}, not {sort!r}"
        )
    store, out = _open(store, out)
    # The colours: not the row reserved for nodata, which is none.
    codebook, counts = store.codebook[: store.meta.n_colors], _counts(store)
    if sort == "count" and counts is None:
        raise BigquantError(f"{store.path}: the store records no pixel counts to sort by")
    light = lightness(codebook)
    key = light if sort == "lightness" else -np.asarray(counts, dtype=np.float64)
    order = np.argsort(key, kind="stable")
    n, n_channels = codebook.shape
    tile = 48 if n <= 256 else 8
    columns = math.ceil(math.sqrt(n))
    colours = to_8bit(codebook, codebook.dtype)
    canvas = Image.new(_MODES[n_channels], (columns * tile, -(-n // columns) * tile))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    total = sum(counts) if counts else 0
    for cell, i in enumerate(order):
        x, y = cell % columns * tile, cell // columns * tile
        draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=tuple(colours[i].tolist()))
        if tile > 8:
            text = f"{i}"
            if counts is not None:
                text += f"\n{100 * counts[i] / (total or 1):.1f}%\n{_short(counts[i])}"
            ink = 0 if light[i] > _LIGHT else 255
            fill = (ink,) * min(n_channels, 3) + (255,) * (n_channels in (2, 4))
            draw.multiline_text((x + 3, y + 2), text, fill=fill, font=font, spacing=1)
    with Output(out, "png").write(overwrite=overwrite) as tmp:
        _save_png(np.asarray(canvas), tmp)
    return n


def terminal_swatches(codebook: np.ndarray, counts: list[int] | None, *, limit: int = 64) -> str:
    """The codebook as coloured swatches for a terminal: ``index #rrggbb share``, a few a line.

    Each colour's 8-bit hex code (``#vvvvvv`` for grey; channels past the third
    ignored) is printed on a 24-bit ANSI background of that colour, in black or
    white by its lightness, so that it still reads once ``click.echo`` strips
    the styles from piped output. Most frequent colours come first when
    ``counts`` are given (with their share of pixels), else in index order; at
    most ``limit`` are shown, then a line ``… and N more``.
    """
    import click

    codebook = np.asarray(codebook)
    if codebook.ndim == 1:
        codebook = codebook[:, None]
    x = to_8bit(codebook, codebook.dtype)
    rgb = x[:, :3] if x.shape[1] >= 3 else np.repeat(x[:, :1], 3, axis=1)
    light = lightness(codebook)
    order = np.arange(len(x)) if counts is None else np.argsort(-np.asarray(counts), kind="stable")
    total = sum(counts) if counts else 0
    width = len(str(len(x) - 1))
    entries = []
    for i in order[: max(limit, 0)]:
        r, g, b = (int(v) for v in rgb[i])
        swatch = click.style(
            f" #{r:02x}{g:02x}{b:02x} ", bg=(r, g, b), fg="black" if light[i] > _LIGHT else "white"
        )
        share = "" if counts is None else f" {100 * counts[i] / (total or 1):5.1f}%"
        entries.append(f"{i:>{width}} {swatch}{share}")
    # Visible width of an entry: index, space, swatch, share; plus two spaces between entries.
    per_line = max(1, 80 // (width + 10 + (7 if counts is not None else 0) + 2))
    lines = ["  ".join(entries[k : k + per_line]) for k in range(0, len(entries), per_line)]
    if len(x) > len(entries):
        lines.append(f"… and {len(x) - len(entries)} more")
    return "\n".join(lines)


def _open(store, out) -> tuple[Store, str]:
    """The opened store and normalized PNG output, with the checks both pictures share."""
    out = location.normalize(out)
    if posixpath.splitext(location.name(out))[1].lower() != ".png":
        raise BigquantError(f"{out}: output must end in .png")
    if not isinstance(store, Store):
        store = open_store(store)
    if out == store.path:
        raise BigquantError(f"{out}: the output would replace its own store")
    _channels(store)
    return store, out


def _channels(store: Store) -> int:
    n_channels = store.codebook.shape[1]
    if n_channels not in _MODES:
        raise BigquantError(
            f"{store.path}: preview needs 1 to 4 channels, the store has {n_channels}"
        )
    return n_channels


def _counts(store: Store) -> list[int] | None:
    """The store's per-colour pixel counts, or None when it has none (or not one per colour)."""
    counts = store.meta.counts
    if counts is None or len(counts) != len(store.codebook):
        return None
    return counts[: store.meta.n_colors]


def _short(n: int) -> str:
    """A pixel count in at most 5 characters: 987, 12.3k, 4.5M, 123G."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


def _save_png(pixels: np.ndarray, path: str) -> None:
    from PIL import Image

    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    fs, where = location.filesystem(path)
    with fs.open(where, "wb") as f:
        Image.fromarray(np.ascontiguousarray(pixels)).save(f, format="PNG")
