"""Fit stage: k-means quality on real photographs, and the degenerate cases."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
from conftest import photo

from bigquant.errors import BigquantError
from bigquant.fit import fit_codebook, fit_sample
from bigquant.kernels.nearest import nearest


def test_every_colour_is_used_and_distinct(china):
    result = fit_codebook(
        da.from_array(china, chunks=(200, 200, 3)), 256, sample_size=50_000, seed=1
    )
    labels, _ = nearest(china.reshape(-1, 3), result.codebook)
    counts = np.bincount(labels, minlength=len(result.codebook))
    assert len(np.unique(result.codebook, axis=0)) == len(result.codebook)
    # No dead entries (dask-ml parks empty clusters, unused, at black).
    assert (counts > 0).all()


def test_same_seed_same_codebook_other_seed_differs(china):
    data = da.from_array(china, chunks=(100, 100, 3))
    a = fit_codebook(data, 16, sample_size=20_000, seed=5).codebook
    b = fit_codebook(data.rechunk((61, 333, 3)), 16, sample_size=20_000, seed=5).codebook
    c = fit_codebook(data, 16, sample_size=20_000, seed=6).codebook
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fewer_distinct_colours_than_k_gives_exactly_those(caplog):
    colours = np.array([[255, 0, 0], [0, 128, 0], [0, 0, 255], [7, 7, 7]], np.uint8)
    image = colours[np.random.default_rng(0).integers(0, 4, (90, 70))]
    with caplog.at_level(logging.WARNING, logger="bigquant"):
        result = fit_codebook(da.from_array(image, chunks=32), 16)
    assert "only 4 distinct colours" in caplog.text
    assert sorted(map(tuple, result.codebook)) == sorted(map(tuple, colours))
    assert result.n_iter == 0


def test_one_colour_image():
    image = np.full((40, 50, 3), 77, np.uint8)
    result = fit_codebook(da.from_array(image, chunks=16), 8)
    np.testing.assert_array_equal(result.codebook, [[77, 77, 77]])


def test_uint16_and_float32_codebooks_stay_in_range():
    rng = np.random.default_rng(2)
    u16 = (photo("coffee").astype(np.uint16) * 257)[:200, :200]
    cb = fit_codebook(da.from_array(u16, chunks=64), 32, seed=0).codebook
    assert cb.dtype == np.uint16 and len(cb) == 32
    f32 = rng.random((100, 100, 2)).astype(np.float32)
    cbf = fit_codebook(da.from_array(f32, chunks=64), 8, seed=0).codebook
    assert cbf.dtype == np.float32 and len(cbf) == 8
    # Float colours are not rounded, and each is (nearly) the mean of the pixels nearest to it.
    pixels = f32.reshape(-1, 2)
    labels, _ = nearest(pixels, cbf)
    means = np.array([pixels[labels == i].mean(axis=0) for i in range(8)])
    np.testing.assert_allclose(cbf, means, atol=0.02)
    assert not np.array_equal(cbf, np.rint(cbf * 255) / 255)


def test_nan_pixels_are_ignored(caplog):
    caplog.set_level(logging.INFO, "bigquant")
    data = np.random.default_rng(0).random((1000, 3)).astype(np.float32)
    data[::10] = np.nan
    result = fit_sample(data, 4)
    assert np.isfinite(result.codebook).all()
    assert "NaN" in caplog.text


@pytest.mark.parametrize("k", [0, 65537])
def test_k_out_of_range(k):
    with pytest.raises(BigquantError, match="`n_colors` must be between 1 and 65536"):
        fit_sample(np.zeros((10, 3), np.uint8), k)


def test_codebook_runs_dark_to_light(china):
    from bigquant.kernels.color import lightness

    codebook = fit_codebook(da.from_array(china, chunks=(200, 200, 3)), 32, seed=3).codebook
    assert np.all(np.diff(lightness(codebook)) >= 0)
    # A grey image's codebook ascends, so its raw labels are a greyscale picture.
    grey = photo("camera")
    cb = fit_codebook(da.from_array(grey[:, :, None], chunks=128), 8, seed=0).codebook
    assert np.all(np.diff(cb[:, 0].astype(int)) > 0)


def test_dask_ml_iterations_give_the_same_centres_with_the_compiled_distances(china, monkeypatch):
    import contextlib

    from dask_ml.cluster import k_means

    from bigquant import fit

    original = k_means.pairwise_distances_argmin_min
    rng = np.random.default_rng(3)
    x = china.reshape(-1, 3)[rng.choice(china.shape[0] * china.shape[1], 150_000)]
    x32 = x.astype(np.float32)
    init = fit._initial_centers(x.astype(np.float64), 64, np.random.RandomState(3))
    tol = 1e-4 * float(x32.var(axis=0).mean())
    compiled = fit._lloyd(x32, init, 3, 10, tol)
    assert k_means.pairwise_distances_argmin_min is original  # put back after the fit
    monkeypatch.setattr(fit, "_compiled_distances", contextlib.nullcontext)
    own = fit._lloyd(x32, init, 3, 10, tol)
    np.testing.assert_array_equal(compiled[0], own[0])
    assert compiled[1] == own[1] > 1


def test_other_callers_of_dask_ml_distances_get_dask_ml_s_own(china):
    from dask_ml.cluster import k_means

    from bigquant.fit import _compiled_distances

    x = da.from_array(china.reshape(-1, 3)[:5000].astype(np.float64), chunks=(2000, 3))
    centers = china.reshape(-1, 3)[::9000].astype(np.float64)
    theirs = [a.compute() for a in k_means.pairwise_distances_argmin_min(x, centers, metric="l1")]
    plain = [a.compute() for a in k_means.pairwise_distances_argmin_min(x, centers)]
    with _compiled_distances():
        swapped = k_means.pairwise_distances_argmin_min
        ours = [a.compute() for a in swapped(x, centers, metric="l1")]
        compiled = [a.compute() for a in swapped(x, centers)]
    assert swapped is not k_means.pairwise_distances_argmin_min
    for a, b in zip(theirs + plain, ours + compiled, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
