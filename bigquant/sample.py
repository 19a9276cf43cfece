"""Sample stage: a uniform random sample of pixels, the same for a seed whatever the chunking.

The pixel positions are drawn on the client from the seed and the image shape
alone; each chunk task then gathers the positions that fall inside it, and the
gathered rows are put back in position order. Chunks holding no sampled pixel
are never read: on a large image the sample comes from a random subset of
blocks, so read through small chunks (`SAMPLE_BLOCK`) only a fraction of the
image is decoded.
"""

from __future__ import annotations

import numpy as np

from . import defaults
from .errors import ParameterError
from .progress import compute

#: Side of the image blocks a sample is drawn from (pixels, in image coordinates).
SAMPLE_BLOCK = 512
#: Fewest blocks a sample is spread over, for coverage of the whole image.
MIN_BLOCKS = 256


def sample_positions(shape: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """Sorted flat (row-major) indices of ``n`` distinct pixels, each equally likely.

    Two stages, so that a large image need not be decoded whole: a random set of
    `SAMPLE_BLOCK`² blocks of the image (at least `MIN_BLOCKS`, and enough to
    hold four times ``n`` pixels), then ``n`` pixels drawn uniformly from the
    pixels of those blocks. Every pixel has the same chance to be drawn. A small
    image has no more blocks than that, and gets a simple random sample of all
    its pixels. Depends on the image's ``(rows, columns)``, ``n`` and ``seed`` only.
    """
    height, width = shape
    if n >= height * width:
        return np.arange(height * width, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows, cols = -(-height // SAMPLE_BLOCK), -(-width // SAMPLE_BLOCK)
    n_blocks = min(rows * cols, max(MIN_BLOCKS, -(-4 * n // SAMPLE_BLOCK**2)))
    blocks = np.arange(rows * cols)
    if n_blocks < len(blocks):
        blocks = np.sort(rng.choice(len(blocks), n_blocks, replace=False, shuffle=False))
    by, bx = np.divmod(blocks, cols)
    heights = np.minimum(SAMPLE_BLOCK, height - by * SAMPLE_BLOCK)
    widths = np.minimum(SAMPLE_BLOCK, width - bx * SAMPLE_BLOCK)
    ends = np.cumsum(heights * widths)
    picks = rng.choice(ends[-1], size=min(n, ends[-1]), replace=False, shuffle=False)
    which = np.searchsorted(ends, picks, side="right")
    offset = picks - (ends[which] - heights[which] * widths[which])
    dy, dx = np.divmod(offset, widths[which])
    y = by[which] * SAMPLE_BLOCK + dy
    x = bx[which] * SAMPLE_BLOCK + dx
    return np.sort(y.astype(np.int64) * width + x)


def sample_pixels(data, n: int = defaults.SAMPLE, seed: int = defaults.SEED) -> np.ndarray:
    """Draw ``n`` pixels uniformly without replacement from a ``(Y, X, C)`` dask array.

    Reads only the chunks that hold sampled pixels (dask's ``vindex`` makes a
    task for those alone); with chunks of `SAMPLE_BLOCK` pixels, that is the
    few hundred blocks the sample is drawn from (all of an image up to about
    256 blocks, 67 megapixels). Returns a ``(min(n, Y*X), C)`` numpy array in
    the image's dtype, ordered by pixel position.
    """
    if n < 1:
        raise ParameterError(f"`n` must be a positive number of pixels, not {n}")
    ys, xs = np.divmod(sample_positions(data.shape[:2], n, seed), data.shape[1])
    (sample,) = compute(data.vindex[ys, xs])
    return sample
