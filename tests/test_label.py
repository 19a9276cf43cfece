"""Assign stage: exact nearest colour, ties to the lower index, on any chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bigquant.errors import ParameterError
from bigquant.fit import fit_collection
from bigquant.kernels.nearest import label_block, label_dtype, nearest
from bigquant.label import assign


def reference_labels(image: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Brute-force nearest colour in float64 (exact for integers), first index on ties."""
    px = image.reshape(-1, image.shape[-1]).astype(np.float64)
    d = ((px[:, None, :] - codebook[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(axis=1).reshape(image.shape[:2])


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
    channels=st.integers(1, 5),
    k=st.integers(1, 40),
    # From 4: smaller chunks test nothing more, and thousands of tasks cost minutes.
    cy=st.integers(4, 50),
    cx=st.integers(4, 50),
    seed=st.integers(0, 1000),
)
def test_assign_matches_brute_force_on_any_chunking(dtype, channels, k, cy, cx, seed):
    rng = np.random.default_rng(seed)
    hi = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    image = (rng.random((47, 61, channels)) * hi).astype(dtype)
    codebook = (rng.random((k, channels)) * hi).astype(dtype)
    got = assign(da.from_array(image, chunks=(cy, cx, channels)), codebook).compute()
    assert got.dtype == label_dtype(k)
    np.testing.assert_array_equal(got, reference_labels(image, codebook))


@given(hnp.arrays(np.uint8, (50, 3)))
def test_ties_go_to_the_lower_index(pixels):
    # Duplicated colours tie for every pixel: the first copy must always win.
    codebook = np.array([[10, 20, 30], [200, 100, 0], [10, 20, 30], [200, 100, 0]], np.uint8)
    labels, _ = nearest(pixels, codebook)
    assert set(labels.tolist()) <= {0, 1}


def test_distances_are_exact_for_uint16_extremes():
    pixels = np.array([[65535, 0, 65535], [0, 0, 0]], np.uint16)
    codebook = np.array([[65534, 0, 65535], [0, 0, 1]], np.uint16)
    labels, sq = nearest(pixels, codebook)
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_array_equal(sq, [1.0, 1.0])


def test_real_photo_matches_reference(china):
    rng = np.random.default_rng(0)
    codebook = china.reshape(-1, 3)[rng.choice(china.shape[0] * china.shape[1], 64)]
    crop = china[:150, :170]
    got = assign(da.from_array(crop, chunks=(37, 41, 3)), codebook).compute()
    np.testing.assert_array_equal(got, reference_labels(crop, codebook))


def test_more_than_256_colours_gives_uint16_labels():
    codebook = np.stack(np.meshgrid(np.arange(20), np.arange(20), [0]), -1).reshape(-1, 3)
    image = codebook.reshape(20, 20, 3).astype(np.uint8)
    labels = assign(da.from_array(image, chunks=7), codebook.astype(np.uint8)).compute()
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, np.arange(400).reshape(20, 20))


def test_bad_arguments_are_parameter_errors_as_in_compress():
    with pytest.raises(ParameterError, match=r"`codebook`.*channels"):
        assign(da.zeros((4, 4, 3), np.uint8), np.zeros((2, 4), np.uint8))
    # Perceptual spaces assume [0, peak] values: refused for signed images, as compress does.
    with pytest.raises(ParameterError, match="space"):
        assign(da.zeros((4, 4, 3), dtype=np.int16), np.zeros((2, 3), np.int16), space="oklab")
    with pytest.raises(ParameterError, match="`images`"):
        fit_collection([], 4)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 7, 300])
def test_colour_table_equals_direct_distances(channels, k):
    rng = np.random.default_rng(k + channels)
    codebook = rng.integers(0, 256, (k, channels), dtype=np.uint8)
    codebook[-1] = codebook[0]  # a duplicate: ties must still go to the lower index
    pixels = rng.integers(0, 256, (300_000, channels), dtype=np.uint8)
    block = pixels.reshape(600, 500, channels)
    direct = label_block(block, codebook, use_table=False)
    table = label_block(block, codebook, use_table=True)
    np.testing.assert_array_equal(table[0], direct[0])
    assert table[1] == direct[1]
    np.testing.assert_array_equal(table[2], direct[2])
    np.testing.assert_array_equal(direct[0].ravel(), nearest(pixels, codebook)[0])


def test_colour_table_on_a_real_photo(china):
    rng = np.random.default_rng(0)
    codebook = china.reshape(-1, 3)[rng.choice(china.shape[0] * china.shape[1], 256)]
    labels = label_block(china, codebook, use_table=True)[0]
    # Brute force on every 5th row: the whole photo would take a 1.6 GB distance matrix.
    np.testing.assert_array_equal(labels[::5], reference_labels(china[::5], codebook))
