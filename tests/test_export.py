"""Viewer-ready outputs of a store: the indexed-colour (palette) TIFF, georeferencing."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import tifffile
from conftest import cli
from hypothesis import given, settings
from hypothesis import strategies as st
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


def _exact_means(colors: np.ndarray, valid: np.ndarray, f: int, fill, dtype) -> np.ndarray:
    """Mean colour of each f x f block (partial at the edges) of the pixels with data, in
    memory: float64 sums of integers are exact, then rounded half to even as in_dtype does."""
    ys, xs = np.arange(0, colors.shape[0], f), np.arange(0, colors.shape[1], f)
    sums = np.add.reduceat(np.add.reduceat(colors * valid[..., None], ys, 0), xs, 1)
    counts = np.add.reduceat(np.add.reduceat(valid.astype(np.float64), ys, 0), xs, 1)
    means = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], fill)
    return np.clip(np.rint(means), 0, np.iinfo(dtype).max).astype(dtype)


def _mosaic(china) -> np.ndarray:
    # 2187 x 1579: odd sides on the first levels, three overview levels, an edge tile row
    # and column of every page partial.
    return np.tile(china, (6, 3, 1))[:2187, :1579]


@pytest.mark.parametrize(
    "case", ["rgb, awkward chunks", "nodata, bands of whole chunks", "grey 16-bit", "palette"]
)
def test_every_page_is_the_block_means_of_the_whole_image(tmp_path, china, case):
    """Each overview, made in one pass from the level below, is the mean colour of its
    2^n x 2^n blocks of the whole image as if computed from all of it (the labels of every
    2^n-th pixel for a palette TIFF), and tifffile, Pillow and GDAL read every page alike."""
    from PIL import Image

    image = _mosaic(china)
    if case.startswith("nodata"):
        image[:700, :900] = 0  # a mosaic's empty corner: 2 x 2 blocks of both kinds on its edge
        src = tmp_path / "n.tif"
        tifffile.imwrite(src, image, photometric="rgb", tile=(256, 256),
                         extratags=[(42113, "s", 0, "0", True)])  # fmt: skip
        bigquant.compress(src, tmp_path / "s.zarr", 48, sample_size=20_000, chunks=1024)
    else:
        if case.startswith("grey"):
            image = image[:, :, 1].astype(np.uint16) * 257
        chunks = (389, 277, *image.shape[2:])
        import dask.array as da

        bigquant.compress(da.from_array(image, chunks=chunks), tmp_path / "s.zarr", 48,
                          sample_size=20_000)  # fmt: skip
    store = bigquant.open_store(tmp_path / "s.zarr")
    labels, codebook = store.labels[:], store.codebook
    skip = store.meta.nodata_label
    assert (skip is not None) == case.startswith("nodata")
    palette = case == "palette"
    out = tmp_path / "q.tif"
    bigquant.decompress(store, out, palette=palette)

    valid = labels != skip if skip is not None else np.ones(labels.shape, bool)
    colors = codebook[labels].astype(np.float64)
    with tifffile.TiffFile(out) as tif:
        pages = [page.asarray() for page in tif.pages]
    assert [p.shape[:2] for p in pages] == [(2187, 1579), (1094, 790), (547, 395), (274, 198)]
    for n, page in enumerate(pages):
        f = 2**n
        if palette:
            expected = labels[::f, ::f]
        else:
            fill = codebook[skip] if skip is not None else 0
            expected = _exact_means(colors, valid, f, fill, codebook.dtype)
            expected = expected[:, :, 0] if expected.shape[2] == 1 else expected
        np.testing.assert_array_equal(page, expected, err_msg=f"page {n}")
        with Image.open(out) as im:
            im.seek(n)
            np.testing.assert_array_equal(np.asarray(im), page, err_msg=f"Pillow, page {n}")
        if n and shutil.which("gdal_translate"):
            level = tmp_path / f"level{n}.tif"
            subprocess.run(["gdal_translate", "-q", "-ovr", str(n - 1), str(out), str(level)],
                           check=True)  # fmt: skip
            np.testing.assert_array_equal(tifffile.imread(level), page, err_msg=f"GDAL, {n}")


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    size=st.sampled_from([2, 4, 8]),
    nodata=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pyramid_rows_a_row_of_tiles_at_a_time_is_the_block_means(
    height, width, size, nodata, seed
):
    """`pyramid_rows` on tiles of a few pixels, fed a row of tiles at a time: every level,
    whether a call gives it several rows or half of one (its row of sums then waits for the
    next call), is the exact block mean, however odd its sides."""
    from bigquant.kernels.downsample import pyramid_rows

    rng = np.random.default_rng(seed)
    codebook = rng.integers(0, 256, (7, 3)).astype(np.uint8)
    labels = rng.integers(0, 7, (height, width)).astype(np.uint8)
    skip = 6 if nodata else None
    weights = np.ones((7, 1))
    if nodata:
        weights[skip] = 0
    n_levels = max(1, int(np.ceil(np.log2(max(height, width)))))
    widths = [-(-width // 2**n) for n in range(1, n_levels + 1)]
    heights = [-(-height // 2**n) for n in range(1, n_levels + 1)]
    pages = [
        np.zeros((h + size, w + size, 3), np.uint8) for h, w in zip(heights, widths, strict=True)
    ]
    tiles = [np.zeros((-(-w // size), size, size, 3), np.uint8) for w in widths]
    sums = [np.zeros((w, 4)) for w in widths]
    filled, made = np.zeros(n_levels, np.int64), np.zeros(n_levels, np.int64)
    for top in range(0, height, size):
        pyramid_rows(labels[top : top + size], top, height, tiles, filled,
                     weighted=np.hstack([np.where(weights > 0, codebook, 0), weights]),
                     fill=codebook[skip] if nodata else np.zeros(3), dtype=np.uint8, sums=sums)  # fmt: skip
        for n in range(n_levels):  # as `_Pages` does: a full row of tiles leaves, zeros come
            if filled[n] == size or (top + size >= height and filled[n]):
                rows = tiles[n].transpose(1, 0, 2, 3).reshape(size, -1, 3)
                pages[n][made[n] : made[n] + size, : rows.shape[1]] = rows
                made[n] += filled[n]
                tiles[n][:] = 0
                filled[n] = 0
    valid = labels != skip if nodata else np.ones(labels.shape, bool)
    colors = codebook[labels].astype(np.float64)
    fill = codebook[skip] if nodata else 0
    for n in range(n_levels):
        assert made[n] == heights[n]
        expected = _exact_means(colors, valid, 2 ** (n + 1), fill, np.uint8)
        np.testing.assert_array_equal(pages[n][: heights[n], : widths[n]], expected)
    with pytest.raises(ValueError, match="a row of"):  # more rows than a row of tiles
        pyramid_rows(labels[:1].repeat(size + 1, 0), 0, height, tiles, filled, weighted=weights,
                     fill=np.zeros(3), dtype=np.uint8, sums=sums)  # fmt: skip
