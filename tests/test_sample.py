"""Sample stage: uniform, seeded, and blind to chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigquant.errors import BigquantError
from bigquant.sample import sample_pixels, sample_positions


@settings(max_examples=25, deadline=None)
@given(
    cy=st.integers(9, 120),
    cx=st.integers(9, 160),
    cc=st.integers(1, 3),
    n=st.integers(1, 5000),
    seed=st.integers(0, 2**32 - 1),
)
def test_sample_is_independent_of_chunking(china, cy, cx, cc, n, seed):
    expected = china.reshape(-1, 3)[sample_positions(china.shape[:2], n, seed)]
    got = sample_pixels(da.from_array(china, chunks=(cy, cx, cc)), n, seed)
    np.testing.assert_array_equal(got, expected)


def test_positions_are_distinct_uniform_and_seeded():
    shape = (1000, 1000)
    a = sample_positions(shape, 100_000, seed=3)
    assert len(np.unique(a)) == 100_000
    np.testing.assert_array_equal(a, sample_positions(shape, 100_000, seed=3))
    assert not np.array_equal(a, sample_positions(shape, 100_000, seed=4))
    # Uniform: each tenth of the rows holds about a tenth of the sample.
    per_band = np.bincount(a // 1000 // 100, minlength=10)
    assert np.all(np.abs(per_band - 10_000) < 600)


def test_sample_larger_than_image_is_every_pixel(china):
    got = sample_pixels(da.from_array(china, chunks=(100, 100, 3)), 10**7, seed=0)
    np.testing.assert_array_equal(got, china.reshape(-1, 3))


def test_sample_reads_only_chunks_it_needs():
    reads = []

    def block(x, block_info=None):
        reads.append(block_info[0]["chunk-location"])
        return x

    data = da.zeros((1000, 1000, 1), np.uint8, chunks=(100, 100, 1)).map_blocks(
        block, dtype=np.uint8
    )
    sample_pixels(data, 5, seed=0)
    assert 1 <= len(reads) <= 5


def test_bad_sample_size():
    with pytest.raises(BigquantError, match="positive"):
        sample_pixels(da.zeros((4, 4, 1), np.uint8), 0)
