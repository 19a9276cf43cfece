"""Perceptual colour spaces: conversions, assignment in them, and mean ΔE on real photographs."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from conftest import cli, photo, write_tiff
from test_cli import assert_clean_failure

import bigquant
from bigquant.kernels.color import delta_e_stride, from_space, oklab, to_space
from bigquant.kernels.nearest import label_block, nearest
from bigquant.label import assign


def test_conversions_match_published_values(china):
    import skimage.color

    pixels = china.reshape(-1, 3)[::97]
    np.testing.assert_allclose(
        to_space(pixels, "lab"), skimage.color.rgb2lab(pixels[None] / 255)[0], atol=0.01
    )
    # Ottosson's reference values for white and sRGB red.
    np.testing.assert_allclose(
        oklab(np.array([[255, 255, 255], [255, 0, 0]], np.uint8)),
        [[1.0, 0.0, 0.0], [0.627955, 0.224863, 0.125846]],
        atol=1e-5,
    )
    for dtype, scale in [(np.uint8, 1), (np.uint16, 257), (np.float32, 1 / 255)]:
        values = (pixels.astype(np.float64) * scale).astype(dtype)
        for space in ("oklab", "lab"):
            back = from_space(to_space(values, space), space, values.dtype)
            np.testing.assert_allclose(back, values, atol=1e-6 * np.max(values))


@pytest.mark.parametrize("space", ["oklab", "lab"])
def test_table_and_direct_assignment_agree_and_are_nearest_in_the_space(astronaut, space):
    rng = np.random.default_rng(1)
    codebook = astronaut.reshape(-1, 3)[rng.choice(512 * 512, 48, replace=False)]
    direct = label_block(astronaut, codebook, space=space, use_table=False)
    table = label_block(astronaut, codebook, space=space, use_table=True)
    np.testing.assert_array_equal(direct[0], table[0])
    assert direct[1] == table[1]
    # The labels are the nearest colours in the space, not in RGB.
    pixels = astronaut.reshape(-1, 3)[::31]
    d = ((to_space(pixels, space)[:, None] - to_space(codebook, space)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(direct[0].ravel()[::31], d.argmin(axis=1))
    assert (direct[0].ravel() != nearest(astronaut.reshape(-1, 3), codebook)[0]).mean() > 0.01
    # Chunk edges: a dask array with awkward chunks labels the same.
    lazy = assign(da.from_array(astronaut, chunks=(37, 61, 3)), codebook, space=space)
    np.testing.assert_array_equal(lazy.compute(), direct[0])


@pytest.mark.parametrize("name", ["china", "astronaut", "coffee"])
def test_oklab_lowers_mean_delta_e_at_equal_k(tmp_path, name):
    image = photo(name)
    results = {
        space: bigquant.compress(image, tmp_path / f"{space}.zarr", 32, space=space)
        for space in ("rgb", "oklab")
    }
    assert results["oklab"].space == "oklab"
    assert results["oklab"].delta_e < 0.95 * results["rgb"].delta_e
    # Both stores hold colours in the source's values, and the reported ΔE is the
    # mean over every pixel (an image this small is measured whole).
    assert delta_e_stride(*image.shape[:2]) == 1
    for space, meta in results.items():
        store = bigquant.open_store(tmp_path / f"{space}.zarr")
        assert store.codebook.dtype == np.uint8
        quantized = store.quantized().compute().reshape(-1, 3)
        expected = 100 * np.sqrt(((oklab(image.reshape(-1, 3)) - oklab(quantized)) ** 2).sum(1))
        assert meta.delta_e == pytest.approx(expected.mean(), rel=1e-9)


def test_delta_e_lattice_does_not_depend_on_chunking(tmp_path, china, monkeypatch):
    # As if the image were 16 times larger than the whole-image limit: a lattice is used.
    monkeypatch.setattr("bigquant.kernels.color.DELTA_E_PIXELS", 1 << 14)
    big = china
    step = delta_e_stride(*big.shape[:2])
    assert step > 1 and step % 2 == 1
    metas = [
        bigquant.compress(da.from_array(big, chunks=c), tmp_path / f"{i}.zarr", 16)
        for i, c in enumerate([(512, 512, 3), (301, 777, 3)])
    ]
    assert metas[0].delta_e == pytest.approx(metas[1].delta_e, rel=1e-12)
    quantized = bigquant.open_store(tmp_path / "0.zarr").quantized()[::step, ::step].compute()
    lattice = big[::step, ::step].reshape(-1, 3)
    expected = 100 * np.sqrt(((oklab(lattice) - oklab(quantized.reshape(-1, 3))) ** 2).sum(1))
    assert metas[0].delta_e == pytest.approx(expected.mean(), rel=1e-9)


def test_perceptual_space_needs_rgb(tmp_path, china):
    bigquant.compress(china[:, :, 0], tmp_path / "grey.zarr", 4)  # rgb space: fine
    tif = write_tiff(tmp_path / "grey.tif", china[:, :, 0])
    result = cli("compress", tif, tmp_path / "s.zarr", "--space", "oklab")
    assert_clean_failure(result, "--space oklab needs an RGB image, not 1 channel(s)")
    assert not (tmp_path / "s.zarr").exists()
    meta = bigquant.open_store(tmp_path / "grey.zarr").meta
    assert meta.delta_e is None
