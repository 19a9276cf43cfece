"""Dithering on real photographs: references, seams, what it costs and what it buys."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from conftest import cli, photo, write_tiff
from scipy.ndimage import gaussian_filter
from test_cli import assert_clean_failure

import bigquant
from bigquant.errors import BigquantError
from bigquant.kernels.dither import _bayer, dithered_labels, spread
from bigquant.kernels.nearest import nearest


def blurred_psnr(image: np.ndarray, quantized: np.ndarray, sigma: float = 1.5) -> float:
    """PSNR of both images seen through a Gaussian blur: roughly what the eye sees."""
    a = gaussian_filter(image.astype(np.float64), (sigma, sigma, 0))
    b = gaussian_filter(quantized.astype(np.float64), (sigma, sigma, 0))
    return 10 * np.log10(255**2 / ((a - b) ** 2).mean())


def floyd_steinberg_reference(image: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Plain-Python serpentine Floyd–Steinberg in the kernel's float32 steps."""
    h, w, c = image.shape
    err = np.zeros((h + 1, w + 2, c), np.float32)
    labels = np.empty((h, w), np.int64)
    cb = codebook.astype(np.float32)
    for y in range(h):
        step = 1 if y % 2 == 0 else -1
        for x in range(w) if step == 1 else range(w - 1, -1, -1):
            value = np.clip(image[y, x].astype(np.float32) + err[y, x + 1], 0, 255)
            value = value.astype(np.float32)
            best = int(nearest(np.floor(value + 0.5).astype(np.uint8)[None], codebook)[0][0])
            labels[y, x] = best
            e = (value - cb[best]).astype(np.float64)
            for dy, dx, weight in ((0, step, 7), (1, -step, 3), (1, 0, 5), (1, step, 1)):
                target = err[y + dy, x + 1 + dx]
                err[y + dy, x + 1 + dx] = (target + e * weight / 16).astype(np.float32)
    return labels


@pytest.fixture(scope="module")
def codebook16(china):
    return bigquant.fit_codebook(da.from_array(china), 16).codebook


def test_bayer_matrix_spreads_thresholds_evenly():
    m = _bayer(8)
    assert sorted(m.ravel()) == list(range(64))
    # Every 2 x 2 block holds one value from each quarter of the range.
    assert all(
        sorted(m[i : i + 2, j : j + 2].ravel() // 16) == [0, 1, 2, 3]
        for i in range(0, 8, 2)
        for j in range(0, 8, 2)
    )


def test_ordered_equals_reference_and_is_seamless(china, codebook16):
    image = china
    amplitude = spread(codebook16)
    threshold = (np.tile(_bayer(8), (54, 80))[:427, :640] + 0.5) / 64 - 0.5
    shifted = np.clip(np.rint(image + amplitude * threshold[:, :, None]), 0, 255).astype(np.uint8)
    expected = nearest(shifted.reshape(-1, 3), codebook16)[0].reshape(427, 640)
    for chunks in [(427, 640, 3), (97, 131, 3), (64, 64, 3)]:
        got = bigquant.assign(da.from_array(image, chunks=chunks), codebook16, dither="ordered")
        np.testing.assert_array_equal(got.compute(), expected)


def test_floyd_steinberg_equals_reference(china, codebook16):
    crop = china[200:230, 300:341]
    got = dithered_labels(crop, codebook16, "floyd-steinberg", (0, 0))
    np.testing.assert_array_equal(got, floyd_steinberg_reference(crop, codebook16))


@pytest.mark.parametrize("name", ["china", "coffee"])
def test_floyd_steinberg_chunk_seams_do_not_show(name):
    image = photo(name)
    codebook = bigquant.fit_codebook(da.from_array(image), 16).codebook
    whole = bigquant.assign(da.from_array(image), codebook, dither="floyd-steinberg")
    chunked = bigquant.assign(
        da.from_array(image, chunks=(64, 64, 3)), codebook, dither="floyd-steinberg"
    )
    whole, chunked = codebook[whole.compute()], codebook[chunked.compute()]
    # The diffusion differs in detail, not in what the eye sees...
    assert abs(blurred_psnr(image, whole) - blurred_psnr(image, chunked)) < 0.3
    # ...nor along the chunk edges: the blurred error there is like anywhere else.
    smooth = (gaussian_filter(x.astype(np.float64), (1.5, 1.5, 0)) for x in (image, chunked))
    error = np.abs(next(smooth) - next(smooth)).mean(axis=2)
    for axis in (1, 0):
        profile = error.mean(axis=axis)
        edges = np.concatenate([profile[i - 2 : i + 2] for i in range(64, len(profile), 64)])
        assert edges.mean() < 1.25 * profile.mean()


@pytest.mark.parametrize("name", ["china", "coffee"])
def test_dithering_costs_psnr_and_buys_smoothness(tmp_path, name):
    image = photo(name)
    results = {}
    for dither in (None, "ordered", "floyd-steinberg"):
        meta = bigquant.compress(image, tmp_path / f"{dither}.zarr", 16, dither=dither)
        quantized = bigquant.open_store(tmp_path / f"{dither}.zarr").quantized().compute()
        # Errors are measured against the original pixels, not the dithered ones.
        mse = ((image.astype(np.float64) - quantized) ** 2).mean()
        assert meta.mse == pytest.approx(mse, rel=1e-12)
        assert meta.dither == dither
        results[dither] = (meta.psnr, blurred_psnr(image, quantized))
    plain = results[None]
    for dither in ("ordered", "floyd-steinberg"):
        psnr, blurred = results[dither]
        assert psnr < plain[0] - 0.3  # noisier pixel by pixel...
        assert blurred > plain[1] + 0.5  # ...but closer to the photograph at a glance


def test_dither_through_the_cli(tmp_path, china):
    src = write_tiff(tmp_path / "c.tif", china, tile=(64, 64))
    result = cli("compress", src, tmp_path / "c.zarr", "-c", 16, "-d", "floyd-steinberg")
    assert result.returncode == 0, result.stderr
    assert bigquant.open_store(tmp_path / "c.zarr").meta.dither == "floyd-steinberg"
    assert cli("compress", src, tmp_path / "x.zarr", "--dither", "noise").returncode == 2
    deep = write_tiff(tmp_path / "16.tif", china.astype(np.uint16) * 257)
    result = cli("compress", deep, tmp_path / "y.zarr", "-d", "floyd-steinberg", "--space", "oklab")
    assert_clean_failure(result, "needs an 8-bit image, not uint16")


def test_floyd_steinberg_with_edge_chunks_smaller_than_its_margin(tmp_path, china):
    data = da.from_array(china, chunks=(70, 70, 3))  # edge chunks of 7 and 10 pixels
    meta = bigquant.compress(data, tmp_path / "s.zarr", 16, dither="floyd-steinberg")
    store = bigquant.open_store(tmp_path / "s.zarr")
    lazy = bigquant.assign(data, store.codebook, dither="floyd-steinberg")
    assert lazy.chunks[1][-1] == 10
    np.testing.assert_array_equal(lazy.compute(), store.labels[:])
    assert meta.mse == pytest.approx(
        ((china - store.codebook[store.labels[:]].astype(np.float64)) ** 2).mean()
    )
    tiny = china[:9, :11]
    labels = bigquant.assign(
        da.from_array(tiny, chunks=(4, 5, 3)), store.codebook, dither="ordered"
    )
    assert labels.compute().shape == (9, 11)
    fs = bigquant.assign(
        da.from_array(tiny, chunks=(4, 5, 3)), store.codebook, dither="floyd-steinberg"
    )
    assert fs.compute().shape == (9, 11)


def test_a_nan_pixel_does_not_spread(china, codebook16):
    image = china[:64, :64].astype(np.float32) / 255
    codebook = codebook16.astype(np.float32) / 255
    clean = dithered_labels(image, codebook, "floyd-steinberg", (0, 0))
    image[10, 10] = np.nan
    holed = dithered_labels(image, codebook, "floyd-steinberg", (0, 0))
    assert holed[10, 10] == 0
    # Before the hole the scan is unchanged; after it, the diffusion goes on as usual.
    np.testing.assert_array_equal(holed[:10], clean[:10])
    assert set(np.unique(holed[11:])) == set(np.unique(clean[11:]))
    assert (holed[11:] == clean[11:]).mean() > 0.5


def test_error_diffusion_without_a_colour_table_is_bounded(tmp_path, china):
    deep = da.from_array(china.astype(np.uint16) * 257)
    with pytest.raises(BigquantError, match="more than 1024 colours needs an 8-bit image"):
        bigquant.compress(deep, tmp_path / "s.zarr", 2000, dither="floyd-steinberg")
