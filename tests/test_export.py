"""Viewer-ready outputs of a store: the indexed-colour (palette) TIFF, georeferencing."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import tifffile
from conftest import cli
from test_cli import assert_clean_failure

import bigquant


@pytest.mark.parametrize(("name", "k", "bits"), [("china", 64, 8), ("astronaut", 300, 16)])
def test_palette_tiff_shows_the_quantized_image(tmp_path, name, k, bits):
    from conftest import photo

    image = photo(name)
    bigquant.compress(image, tmp_path / "s.zarr", n_colors=k, sample_size=40_000)
    store = bigquant.open_store(tmp_path / "s.zarr")
    out = bigquant.decompress(store, tmp_path / "out.tif", palette=True)

    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.bitspersample == bits
        indices = page.asarray()
        colormap = page.colormap
    labels = store.labels[:]
    np.testing.assert_array_equal(indices, labels)
    assert colormap.shape == (3, 2**bits)
    # What a viewer shows, colour map entry by entry, is the quantized image.
    shown = (colormap[:, indices].transpose(1, 2, 0) // 257).astype(np.uint8)
    np.testing.assert_array_equal(shown, store.codebook[labels])
    rgb = bigquant.decompress(store, tmp_path / "rgb.tif")
    # The palette file is smaller than the RGB one; a 16-bit colour map alone takes 384 KiB.
    overhead = 0 if bits == 8 else colormap.nbytes
    assert (tmp_path / "out.tif").stat().st_size - overhead < (tmp_path / "rgb.tif").stat().st_size
    np.testing.assert_array_equal(tifffile.imread(rgb), shown)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (lambda p: p[:, :, :2], "needs a grey or RGB codebook of uint8 or uint16 values, not 2"),
        (lambda p: p.astype(np.float32) / 255, "not 3 channel(s) of float32"),
    ],
)
def test_palette_refuses_codebooks_that_cannot_be_a_palette(tmp_path, china, image, message):
    bigquant.compress(image(china), tmp_path / "s.zarr", n_colors=8, sample_size=20_000)
    result = cli("decompress", tmp_path / "s.zarr", tmp_path / "out.tif", "--palette")
    assert_clean_failure(result, message)
    assert not (tmp_path / "out.tif").exists()
    assert not (tmp_path / ".out.tif.partial").exists()


def test_palette_needs_a_tiff_name(tmp_path, china):
    bigquant.compress(china, tmp_path / "s.zarr", n_colors=8, sample_size=20_000)
    result = cli("decompress", tmp_path / "s.zarr", tmp_path / "out.zarr", "-p")
    assert_clean_failure(result, "--palette writes a TIFF")


@pytest.mark.skipif(not shutil.which("gdal_translate"), reason="GDAL is not installed")
def test_geotiff_georeferencing_reaches_every_tiff_output(tmp_path, china):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, china, photometric="rgb", tile=(128, 128), metadata=None)
    src = tmp_path / "geo.tif"
    subprocess.run(
        ["gdal_translate", "-q", "-a_srs", "EPSG:32633", "-a_ullr", "500000", "4600000",
         "501281", "4599573", "-co", "TILED=YES", str(plain), str(src)],
        check=True,
    )  # fmt: skip
    bigquant.compress(src, tmp_path / "s.zarr", 16)
    info = json.loads(cli("info", tmp_path / "s.zarr", "--json").stdout)
    assert info["crs"] == "EPSG:32633"
    assert info["geotransform"] == pytest.approx([500000, 1281 / 640, 0, 4600000, 0, -1])

    def gdal(path):
        out = json.loads(subprocess.run(["gdalinfo", "-json", str(path)], capture_output=True,
                                        text=True, check=True).stdout)  # fmt: skip
        return out["coordinateSystem"]["wkt"], out["geoTransform"]

    for name, extra in [("q.tif", []), ("p.tif", ["--palette"])]:
        assert cli("decompress", tmp_path / "s.zarr", tmp_path / name, *extra).returncode == 0
        assert gdal(tmp_path / name) == gdal(src), name


@pytest.mark.parametrize("palette", [False, True])
def test_tiff_outputs_carry_overviews(tmp_path, china, palette):
    bigquant.compress(china, tmp_path / "s.zarr", 16, sample_size=20_000)
    out = tmp_path / "q.tif"
    bigquant.decompress(tmp_path / "s.zarr", out, palette=palette)
    with tifffile.TiffFile(out) as tif:
        pages = list(tif.pages)
        full = pages[0].asarray()
        # Halved until a level fits one 512-pixel tile.
        assert [p.shape[:2] for p in pages] == [(427, 640), (214, 320)]
        assert pages[1].subfiletype == tifffile.FILETYPE.REDUCEDIMAGE
        # Differences of indices, or of 16 colours' values, compress worse than the values.
        assert [p.predictor > 1 for p in pages] == [False, not palette]
        if palette:  # indices are sampled, never averaged: every value is a label
            np.testing.assert_array_equal(pages[1].asarray(), full[::2, ::2])
        else:  # 2 x 2 means, the odd last row averaged with itself
            even = np.concatenate([full, full[-1:]]).astype(np.float64)
            means = even.reshape(214, 2, 320, 2, 3).mean(axis=(1, 3))
            assert np.abs(pages[1].asarray() - means).max() <= 0.5
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(out)], capture_output=True, text=True).stdout
        assert "Overviews: 320x214" in info


def test_no_overviews_on_request(tmp_path, china):
    bigquant.compress(china, tmp_path / "s.zarr", 8, sample_size=20_000)
    assert (
        cli("decompress", tmp_path / "s.zarr", tmp_path / "q.tif", "--no-overviews").returncode == 0
    )
    with tifffile.TiffFile(tmp_path / "q.tif") as tif:
        assert len(tif.pages) == 1


def test_rgb_tiff_of_many_colours_predicts_its_full_resolution_too(tmp_path, china):
    from conftest import made_up_meta

    from bigquant.store import create_store, finish_store

    # A photograph on a grid of 32³ colours, past the 16 384 below which the full page
    # goes without the predictor (see test_tiff_outputs_carry_overviews), its labels made here.
    levels = 32
    step = 256 // levels
    cells = china // step
    labels = ((cells[..., 0] * levels + cells[..., 1]) * levels + cells[..., 2]).astype(np.uint16)
    grid = np.stack(np.unravel_index(np.arange(levels**3), (levels,) * 3), axis=1)
    codebook = (grid * step + step // 2).astype(np.uint8)
    meta = made_up_meta(labels.shape, codebook)
    partial = create_store(str(tmp_path / "s.zarr"), (256, 256), codebook, meta)
    partial.labels[:] = labels
    finish_store(partial, meta)
    out = tmp_path / "q.tif"
    bigquant.decompress(tmp_path / "s.zarr", out)
    with tifffile.TiffFile(out) as tif:
        assert [p.predictor > 1 for p in tif.pages] == [True, True]
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(out)), codebook[labels])
