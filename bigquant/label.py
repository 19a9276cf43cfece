"""Label (assign) stage: the nearest codebook colour of every pixel, chunk by chunk, dithered or not.

Every chunk of an image is labelled the same way, described by one
`Labelling`; each is labelled from its `Window`: the chunk, grown by the
margin of its neighbours that error diffusion reads first. The kernels that
choose the colours are in `bigquant.kernels` (`nearest`, `dither`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dask
import numpy as np

from .errors import ParameterError
from .kernels.color import check_space
from .kernels.dither import check_dither, dithered_labels, margin, spread
from .kernels.nearest import label_block, label_dtype, lookup, nodata_mask, score, table_pays

# dask.array only inside the functions that build graphs: worker processes running this
# module's chunk tasks never import it (see bigquant.cluster._WORKER_MODULES).
if TYPE_CHECKING:
    import dask.array as da


@dataclass(frozen=True)
class Labelling:
    """How every chunk of one image is labelled.

    Attributes
    ----------
    space : {"rgb", "oklab", "lab"}
        Where "nearest" is measured (see `bigquant.kernels.color`).
    use_table : bool
        Look colours up in the colour table (8-bit images with up to 3
        channels, where the image is large enough for the table to pay).
    dither : {None, "ordered", "floyd-steinberg"}
        See `bigquant.kernels.dither`.
    amplitude : float
        Range of the ordered threshold (see `bigquant.kernels.dither.spread`).
    nodata : float or None
        Pixels whose channels all hold this value, or any NaN, get the
        codebook's last row, reserved for them; None: no pixel is nodata and
        every row is a colour.
    """

    space: str = "rgb"
    use_table: bool = False
    dither: str | None = None
    amplitude: float = 0.0
    nodata: float | None = None

    @classmethod
    def for_image(
        cls,
        data: da.Array,
        codebook: np.ndarray,
        space: str,
        dither: str | None,
        nodata: float | None = None,
    ) -> Labelling:
        """The labelling of a ``(Y, X, C)`` image with ``codebook`` (its last row for
        ``nodata``, if given)."""
        n_pixels = data.shape[0] * data.shape[1]
        colors = codebook if nodata is None else codebook[:-1]
        return cls(
            space=space,
            use_table=table_pays(n_pixels, *colors.shape, data.dtype),
            dither=dither,
            amplitude=spread(colors) if dither == "ordered" else 0.0,
            nodata=nodata,
        )

    def colors(self, codebook: np.ndarray) -> np.ndarray:
        """The rows of ``codebook`` that are colours: all but the nodata row, if reserved."""
        return codebook if self.nodata is None else codebook[:-1]

    @property
    def margin(self) -> int:
        """Pixels a chunk needs from its neighbours on each side."""
        return margin(self.dither)


@dataclass(frozen=True)
class Window:
    """One chunk of an image and the block of pixels it is labelled from.

    ``block`` holds the chunk grown by a margin into its neighbours (clipped
    at the image's edge); ``own`` cuts the chunk back out of it. ``index`` is
    the chunk's (row, column) in the chunk grid, ``origin`` its first pixel's
    (row, column) in the image.
    """

    index: tuple[int, int]
    origin: tuple[int, int]
    own: tuple[slice, slice]
    block: object  # a dask array, or a delayed one


def windows(data: da.Array, margin: int = 0) -> list[Window]:
    """The `Window` of every chunk of a ``(Y, X, C)`` dask array, row by row."""
    rows, cols = (np.cumsum((0, *c)) for c in data.chunks[:2])
    blocks = data.to_delayed()
    out = []
    for r, c in np.ndindex(len(rows) - 1, len(cols) - 1):
        (y0, y1), (x0, x1) = (rows[r], rows[r + 1]), (cols[c], cols[c + 1])
        top, left = max(0, y0 - margin), max(0, x0 - margin)
        # Sliced rather than dask's overlap, which re-splits chunks smaller than the margin.
        block = blocks[r, c, 0] if margin == 0 else data[top : y1 + margin, left : x1 + margin]
        own = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        out.append(Window((r, c), (int(y0), int(x0)), own, block))
    return out


def label_chunk(
    block: np.ndarray,
    codebook: np.ndarray,
    own: tuple[slice, slice],
    origin: tuple[int, int],
    how: Labelling,
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Label one chunk as ``how`` says.

    ``block``, ``own`` and ``origin`` are as in `Window`. Returns the chunk's
    own pixels, their labels, squared error sum and colour counts; nodata
    pixels get the reserved label, and count in no error.
    """
    if how.nodata is None:
        return _label_colors(block, codebook, own, origin, how)
    # Nodata pixels are labelled as the first colour, exactly (no error), then relabelled.
    colors = how.colors(codebook)
    mask = nodata_mask(block, how.nodata)
    if mask.any():
        block = np.where(mask[:, :, None], colors[0], block)
    pixels, labels, sse, counts = _label_colors(block, colors, own, origin, how)
    mask = mask[own]
    n_nodata = int(np.count_nonzero(mask))
    if n_nodata:  # dithering may have moved them off colour 0: take out what they added
        sse_nodata, counts_nodata = score(pixels[mask], colors, labels[mask])
        sse, counts = sse - sse_nodata, counts - counts_nodata
        # The reserved label is K: 256 colours and nodata need 16-bit labels.
        labels = labels.astype(label_dtype(len(colors) + 1), copy=False)
        labels[mask] = len(colors)
    return pixels, labels, sse, np.append(counts, n_nodata)


def _label_colors(block, codebook, own, origin, how: Labelling):
    if how.dither is None:
        return block, *label_block(block, codebook, space=how.space, use_table=how.use_table)
    pixels = block[own]
    start = (origin[0] - own[0].start, origin[1] - own[1].start)
    labels = dithered_labels(
        block,
        codebook,
        how.dither,
        start,
        space=how.space,
        use_table=how.use_table,
        amplitude=how.amplitude,
    )[own]
    return pixels, labels, *score(pixels.reshape(-1, pixels.shape[2]), codebook, labels.ravel())


def _chunk_labels(block, codebook, own, origin, how: Labelling) -> np.ndarray:
    return label_chunk(block, codebook, own, origin, how)[1]


def assign(
    data: da.Array,
    codebook: np.ndarray,
    *,
    space: str = "rgb",
    dither: str | None = None,
    nodata: float | None = None,
) -> da.Array:
    """Lazily label every pixel of a ``(Y, X, C)`` dask array with its nearest colour.

    Parameters
    ----------
    data : dask.array.Array, shape (Y, X, C) or (Y, X)
        The image; its chunks are the labels' chunks.
    codebook : ndarray, shape (K, C)
        The colours, in ``data``'s values (as `fit_codebook` returns them);
        at most 65536 rows.
    space : {"rgb", "oklab", "lab"}
        Where "nearest" is measured (see `bigquant.kernels.color`).
    dither : {None, "ordered", "floyd-steinberg"}
        See `bigquant.kernels.dither`.
    nodata : float, optional
        Pixels with every channel equal to it, or any NaN, get the last
        codebook row, reserved for them (see `Labelling`).

    Returns
    -------
    dask.array.Array, shape (Y, X)
        ``uint8`` labels for K ≤ 256, ``uint16`` above; chunked like ``data``.
        Computing it reads the whole image once (with ``"floyd-steinberg"``,
        each chunk also reads a margin of its neighbours); store it chunk by
        chunk (``labels.to_zarr``) rather than computing it whole.

    Raises
    ------
    ParameterError
        ``codebook`` is not 2-D or its channels do not match ``data``'s; an
        unknown ``space`` or ``dither``; a perceptual ``space`` for an image
        that is not 3 channels of unsigned or float values; or
        ``"floyd-steinberg"`` where it cannot run (signed values; without the
        colour table of 8-bit images of up to 3 channels, a ``space`` other
        than ``"rgb"`` or more than its limit of colours).

    Examples
    --------
    >>> import dask.array as da
    >>> import bigquant
    >>> pixels = da.random.randint(0, 256, (512, 512, 3), chunks=256).astype("uint8")
    >>> codebook = bigquant.fit_codebook(pixels, 16).codebook
    >>> labels = bigquant.assign(pixels, codebook, dither="ordered")
    >>> labels.shape, labels.dtype, labels.chunksize
    ((512, 512), dtype('uint8'), (256, 256))
    >>> labels.to_zarr("labels.zarr")  # doctest: +SKIP
    """
    import dask.array as da

    codebook = np.asarray(codebook)
    if data.ndim == 2:
        data = data[:, :, None]
    if codebook.ndim != 2 or codebook.shape[1] != data.shape[2]:
        raise ParameterError(
            f"`codebook` of shape {codebook.shape} does not match {data.shape[2]} channels"
        )
    check_space(space, data.shape[2], data.dtype)
    check_dither(dither, data.shape[2], data.dtype, space, len(codebook))
    data = data.rechunk({2: -1})
    how = Labelling.for_image(data, codebook, space, dither, nodata)
    dtype = label_dtype(len(codebook))
    grid = [[None] * len(data.chunks[1]) for _ in data.chunks[0]]
    for w in windows(data, how.margin):
        r, c = w.index
        labels = dask.delayed(_chunk_labels, pure=True)(w.block, codebook, w.own, w.origin, how)
        shape = (data.chunks[0][r], data.chunks[1][c])
        grid[r][c] = da.from_delayed(labels, shape, dtype=dtype)
    return da.block(grid)


def apply_codebook(labels: da.Array, codebook: np.ndarray) -> da.Array:
    """Lazily ``codebook[labels]``: the quantized ``(Y, X, C)`` image of a label array.

    Parameters
    ----------
    labels : dask.array.Array, shape (Y, X)
        Unsigned integer labels (as `assign` or `Store.labels_dask` give).
    codebook : ndarray, shape (K, C)
        The colours the labels index.

    Returns
    -------
    dask.array.Array, shape (Y, X, C)
        In the codebook's dtype, chunked like ``labels``. Computing it reads
        every label once; each chunk then fails with a `BigquantError` on a
        label past the codebook's end.

    Examples
    --------
    >>> import dask.array as da
    >>> import bigquant
    >>> pixels = da.random.randint(0, 256, (512, 512, 3), chunks=256).astype("uint8")
    >>> fit = bigquant.fit_codebook(pixels, 16, seed=1)
    >>> image = bigquant.apply_codebook(bigquant.assign(pixels, fit.codebook), fit.codebook)
    >>> image.shape, image.dtype
    ((512, 512, 3), dtype('uint8'))
    """
    codebook = np.asarray(codebook)
    return labels.map_blocks(
        lookup,
        codebook,
        dtype=codebook.dtype,
        new_axis=2,
        chunks=(*labels.chunks, (codebook.shape[1],)),
    )
