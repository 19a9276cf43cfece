"""Dithering: trade a little PSNR for smooth gradients instead of flat bands of colour.

``ordered``
    An 8 × 8 Bayer threshold, fixed in image coordinates, is added to every
    pixel before its nearest colour is looked up. Each pixel depends on itself
    alone, so chunks are labelled in parallel and meet without seams.
``floyd-steinberg``
    Error diffusion: each pixel's quantization error is pushed onto the pixels
    right of and below it. The scan is sequential, so each chunk is diffused
    on its own, starting `FS_MARGIN` pixels above and beside it (read from the
    neighbouring chunks) so that the error has built up by the time it reaches
    the chunk's own pixels. The diffusion of neighbouring chunks still differs
    near their common edge: a faint seam can show on flat gradients.

Both perturb only the choice of colour; errors (PSNR, ΔE) are measured against
the original pixels.
"""

from __future__ import annotations

import functools

import numpy as np

from ..defaults import DITHERS
from ..errors import ParameterError
from .color import peak_value
from .nearest import color_table, has_table, label_block, label_dtype

#: Rows above and columns beside a chunk that Floyd–Steinberg diffuses through first.
FS_MARGIN = 16
#: Most colours error diffusion compares every pixel with, where no colour table serves it.
_DIFFUSE_COLORS = 1024


def _bayer(n: int) -> np.ndarray:
    """The n × n Bayer index matrix (n a power of two): values 0 .. n² - 1."""
    m = np.zeros((1, 1), np.int64)
    while len(m) < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


#: Thresholds in (-1/2, 1/2), evenly spread.
_BAYER = (_bayer(8) + 0.5) / 64 - 0.5


def check_dither(
    dither: str | None, n_channels: int, dtype: np.dtype, space: str, n_colors: int
) -> None:
    """Refuse an unknown method, or error diffusion where no colour table serves it.

    Without a table (images other than 8-bit with up to 3 channels) error
    diffusion compares every pixel with every colour, in the source's values.
    """
    if dither is None:
        return
    if dither not in DITHERS:
        raise ParameterError(f"`dither` must be one of {', '.join(DITHERS)}, not {dither!r}")
    if dither == "floyd-steinberg" and np.dtype(dtype).kind == "i":
        # The diffused values are clipped to [0, peak], which signed values do not fill.
        raise ParameterError(
            f"`dither` floyd-steinberg needs unsigned or float values, not {dtype}"
        )
    if dither == "floyd-steinberg" and not has_table(n_channels, dtype):
        if space != "rgb":
            raise ParameterError(
                f"`dither` floyd-steinberg with `space` {space} needs an 8-bit image, not {dtype}"
            )
        if n_colors > _DIFFUSE_COLORS:
            raise ParameterError(
                f"`dither` floyd-steinberg with more than {_DIFFUSE_COLORS} colours needs an "
                f"8-bit image with up to 3 channels"
            )


def spread(codebook: np.ndarray) -> float:
    """Range of the ordered threshold: half the median distance from a colour to its nearest other.

    The same shift is added to every channel, moving a colour along the grey
    axis by √3/2 of that median distance at most: enough to reach the
    neighbouring colours. Half gave higher PSNR, blurred and unblurred, than
    the whole distance on the photographs of the test suite.
    """
    if len(codebook) < 2:
        return 0.0
    from scipy.spatial import cKDTree

    cb = codebook.astype(np.float64)
    distances, _ = cKDTree(cb).query(cb, k=2)
    return float(np.median(distances[:, 1])) / 2


def margin(dither: str | None) -> int:
    """Pixels a chunk needs from its neighbours on each side to be dithered."""
    return FS_MARGIN if dither == "floyd-steinberg" else 0


def dithered_labels(
    block: np.ndarray,
    codebook: np.ndarray,
    dither: str,
    origin: tuple[int, int],
    *,
    space: str = "rgb",
    use_table: bool = False,
    amplitude: float = 0.0,
) -> np.ndarray:
    """Labels of an (extended) ``(y, x, C)`` block with ``dither``.

    ``origin`` is the block's first (row, column) in the image: it fixes the
    phase of the ordered threshold. ``amplitude`` is the ordered threshold's
    range (see `spread`). Returns labels for the whole block; the caller crops
    an extended block to its own region.
    """
    if dither == "ordered":
        rows = (origin[0] + np.arange(block.shape[0])) % 8
        cols = (origin[1] + np.arange(block.shape[1])) % 8
        # float32 in place: exact for 8- and 16-bit values, and 4 bytes a value, not 8 and more.
        shifted = block.astype(np.float32)
        shifted += (amplitude * _BAYER[np.ix_(rows, cols)]).astype(np.float32)[:, :, None]
        if np.issubdtype(block.dtype, np.integer):
            info = np.iinfo(block.dtype)
            np.clip(np.rint(shifted, out=shifted), info.min, info.max, out=shifted)
        shifted = shifted.astype(block.dtype)
        return label_block(shifted, codebook, space=space, use_table=use_table)[0]
    table = np.zeros(0, np.uint16)
    if has_table(block.shape[2], block.dtype):
        table = color_table(codebook, space)
    labels = _floyd_steinberg()(
        np.ascontiguousarray(block, dtype=np.float32),
        codebook.astype(np.float32),
        table,
        np.float32(peak_value(block.dtype)),
    )
    return labels.astype(label_dtype(len(codebook)))


@functools.cache
def _floyd_steinberg():
    """The compiled diffusion loop (numba; compiled on first use, cached on disk)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def diffuse(pixels, codebook, table, peak):
        h, w, c = pixels.shape
        labels = np.empty((h, w), np.int32)
        # Errors carried to the current and the next row, with a pixel of padding each side.
        err = np.zeros((2, w + 2, c), np.float32)
        value = np.empty(c, np.float32)
        for y in range(h):
            cur, nxt = err[y % 2], err[(y + 1) % 2]
            nxt[:] = 0
            # Serpentine scan: alternate directions so errors do not drift one way.
            step = 1 if y % 2 == 0 else -1
            for i in range(w):
                x = i if step == 1 else w - 1 - i
                missing = False
                for k in range(c):
                    missing |= np.isnan(pixels[y, x, k])
                    value[k] = min(max(pixels[y, x, k] + cur[x + 1, k], 0.0), peak)
                if missing:
                    # No colour to diffuse from a NaN pixel: label it 0 and carry nothing.
                    labels[y, x] = 0
                    continue
                if len(table):
                    index = 0
                    for k in range(c):
                        index = (index << 8) | int(value[k] + 0.5)
                    best = table[index]
                else:
                    best, best_d = 0, np.inf
                    for j in range(codebook.shape[0]):
                        d = 0.0
                        for k in range(c):
                            d += (value[k] - codebook[j, k]) ** 2
                        if d < best_d:
                            best, best_d = j, d
                labels[y, x] = best
                for k in range(c):
                    e = value[k] - codebook[best, k]
                    cur[x + 1 + step, k] += e * 7 / 16
                    nxt[x + 1 - step, k] += e * 3 / 16
                    nxt[x + 1, k] += e * 5 / 16
                    nxt[x + 1 + step, k] += e * 1 / 16
        return labels

    return diffuse
