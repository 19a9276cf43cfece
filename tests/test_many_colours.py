"""More than 256 colours, up to 65536: uint16 labels, a two-level fit, fast exact labelling."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from conftest import photo

import bigquant
from bigquant.fit import PIXELS_PER_COLOR, _shares, fit_codebook
from bigquant.kernels.nearest import label_block, nearest


def test_colour_shares_follow_the_error_and_respect_distinct_colours():
    sse = np.array([100.0, 400.0, 0.0, 50.0, 1e6])
    distinct = np.array([10, 1000, 1, 1000, 3])
    shares = _shares(sse, distinct, 200)
    assert shares.sum() == 200
    assert (shares >= 1).all() and (shares <= distinct).all()
    assert shares[4] == 3  # all its colours, however large its error
    assert shares[1] > shares[0] and shares[1] > shares[3]


def test_thousands_of_colours_on_a_real_photograph(tmp_path):
    image = photo("china")
    few = bigquant.compress(image, tmp_path / "64.zarr", 64)
    many = bigquant.compress(image, tmp_path / "4096.zarr", 4096)
    store = bigquant.open_store(tmp_path / "4096.zarr")
    assert store.labels.dtype == np.uint16 and many.n_colors == len(store.codebook)
    assert 4000 <= many.n_colors <= 4096  # colours no sampled pixel is nearest to are dropped
    assert many.psnr > few.psnr + 10
    # Exact nearest colours: the stored labels are what a brute-force search gives.
    pixels = image.reshape(-1, 3)
    labels = store.labels[:].ravel()
    np.testing.assert_array_equal(labels[::7], nearest(pixels[::7], store.codebook)[0])
    # Decompressed image = codebook[labels].
    out = bigquant.decompress(store, tmp_path / "q.tif")
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(out), store.codebook[store.labels[:]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_table_tree_and_brute_force_agree_with_many_colours(dtype):
    image = photo("astronaut")
    scale = {np.uint8: 1, np.uint16: 257, np.float32: 1 / 255}[dtype]
    pixels = (image.astype(np.float64) * scale).astype(dtype)
    codebook = np.unique(pixels.reshape(-1, 3)[::37], axis=0)[:1500]  # > 1024: a k-d tree
    labels, sse, counts = label_block(pixels, codebook)
    if dtype == np.uint8:
        table = label_block(pixels, codebook, use_table=True)
        np.testing.assert_array_equal(table[0], labels)
        assert table[1] == sse
    work = pixels.reshape(-1, 3)[::11].astype(np.float64)
    d = ((work[:, None, :] - codebook[None].astype(np.float64)) ** 2).sum(-1)
    agree = labels.ravel()[::11] == d.argmin(axis=1)  # first minimum: ties to the lower index
    assert agree.mean() == 1.0 if dtype != np.float32 else agree.mean() > 0.9999
    assert counts.sum() == image.shape[0] * image.shape[1]


def test_two_level_fit_is_the_same_on_any_scheduler_and_chunking():
    image = photo("coffee")
    kwargs = {"sample_size": 10_000, "seed": 4}
    threads = fit_codebook(da.from_array(image, chunks=(100, 128, 3)), 1000, **kwargs)
    with dask.config.set(scheduler="synchronous"):
        single = fit_codebook(da.from_array(image, chunks=(400, 600, 3)), 1000, **kwargs)
    np.testing.assert_array_equal(threads.codebook, single.codebook)
    # The sample was raised to 16 pixels per colour.
    assert threads.n_samples == PIXELS_PER_COLOR * 1000
