"""One palette across many images: a codebook applied from a store or a palette file, and one
codebook fitted to a collection of real photographs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from conftest import cli, photo, write_tiff
from PIL import Image

import bigquant


def nearest_labels(pixels: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The exact nearest codebook row of every pixel, by brute force (ties to the lower index)."""
    flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.int64)
    d = ((flat[:, None, :] - codebook[None, :, :].astype(np.int64)) ** 2).sum(axis=2)
    return d.argmin(axis=1).reshape(pixels.shape[:2])


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> dict:
    """Three packaged photographs of different sizes, as TIFFs."""
    where = tmp_path_factory.mktemp("photos")
    images = {
        "astronaut": photo("astronaut")[::2, ::2],
        "coffee": photo("coffee")[::2, ::2],
        "chelsea": photo("chelsea"),
    }
    return {name: (write_tiff(where / f"{name}.tif", im, tile=(64, 64)), im)
            for name, im in images.items()}  # fmt: skip


def test_codebook_from_a_store_reproduces_its_labels(tmp_path, china_tif, china):
    bigquant.compress(china_tif, tmp_path / "a.zarr", 24, seed=5)
    result = cli("compress", china_tif, tmp_path / "b.zarr", "--codebook", tmp_path / "a.zarr")
    assert result.returncode == 0, result.stderr
    a, b = bigquant.open_store(tmp_path / "a.zarr"), bigquant.open_store(tmp_path / "b.zarr")
    np.testing.assert_array_equal(b.codebook, a.codebook)
    np.testing.assert_array_equal(b.labels[:], a.labels[:])
    assert b.meta.codebook_from == {"kind": "store", "path": str(tmp_path / "a.zarr")}
    assert b.meta.n_iter == 0 and b.meta.sample_size == 0  # nothing was fitted
    info = cli("info", tmp_path / "b.zarr")
    assert f"applied from store {tmp_path / 'a.zarr'}" in info.stdout


@pytest.mark.parametrize(
    ("k", "kind"),
    [(2, "rgb"), (16, "rgb"), (64, "rgb"), (255, "rgb"), (256, "rgb"), (256, "nodata"),
     (16, "grey"), (16, "12-bit")],
)  # fmt: skip
def test_a_stores_palette_tiff_is_the_store_as_a_codebook(tmp_path, k, kind):
    a, b = photo("astronaut")[80:176, 160:256], photo("coffee")[100:196, 200:296]
    if kind == "nodata":
        a = a.copy()
        a[:30, :40] = 0  # an empty corner, its index in the palette TIFF's GDAL_NODATA
    elif kind in ("grey", "12-bit"):
        a, b = a[:, :, 1], b[:, :, 1]
        if kind == "12-bit":  # 16-bit values, a 12-bit peak: entries scaled by 65535 / 4095
            a, b = a.astype(np.uint16) << 4 | 5, b.astype(np.uint16) << 4
    tags = {"extratags": [(42113, "s", 0, "0", True)]} if kind == "nodata" else {}
    if kind == "12-bit":
        tags = {"bitspersample": 12, "compression": None}
    src_a = write_tiff(tmp_path / "a.tif", a, **tags)
    src_b = write_tiff(tmp_path / "b.tif", b)
    bigquant.compress(src_a, tmp_path / "a.zarr", k, seed=1)
    bigquant.decompress(tmp_path / "a.zarr", tmp_path / "a_p.tif", palette=True)
    by_store = bigquant.open_store(tmp_path / "a.zarr")
    n = by_store.meta.n_colors
    given = bigquant.palettes.load_codebook(tmp_path / "a_p.tif")
    np.testing.assert_array_equal(given.colors, by_store.codebook[:n])
    assert given.colors.dtype == by_store.codebook.dtype
    for name, codebook in (("from_store", "a.zarr"), ("from_tiff", "a_p.tif")):
        bigquant.compress(src_b, tmp_path / f"{name}.zarr", codebook=tmp_path / codebook)
    s, t = (bigquant.open_store(tmp_path / f"{n}.zarr") for n in ("from_store", "from_tiff"))
    np.testing.assert_array_equal(t.codebook, s.codebook)
    np.testing.assert_array_equal(t.labels[:], s.labels[:])
    picture = [x.quantized().compute(scheduler="sync") for x in (t, s)]
    np.testing.assert_array_equal(*picture)
    # Without the ImageDescription (as another tool may copy it), the pixels' entries: the same
    # colours, since the padding repeats one of them and every colour has pixels.
    tifffile.tiffcomment(tmp_path / "a_p.tif", comment=b"")
    if kind == "rgb" and min(by_store.meta.counts[:n]) > 0:
        colors = bigquant.palettes.load_codebook(tmp_path / "a_p.tif").colors
        np.testing.assert_array_equal(colors, by_store.codebook[:n])


def test_palette_files_users_have(tmp_path, china):
    photo_tif = write_tiff(tmp_path / "p.tif", china[:160, :200])
    # No black: Pillow pads the colour map with black entries, which no pixel uses.
    colors = np.array([[20, 20, 20], [255, 255, 255], [200, 40, 30], [60, 90, 160], [90, 140, 60]])
    (tmp_path / "p.gpl").write_text(
        "GIMP Palette\nName: five\nColumns: 5\n#\n"
        + "".join(f"{r:3d} {g:3d} {b:3d}\tcolour {i}\n" for i, (r, g, b) in enumerate(colors))
    )
    (tmp_path / "p.hex").write_text("".join(f"{r:02x}{g:02x}{b:02x}\n" for r, g, b in colors))
    (tmp_path / "p.csv").write_text("r,g,b\n" + "".join(f"{r},{g},{b}\n" for r, g, b in colors))
    (tmp_path / "p.json").write_text(json.dumps([f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colors]))
    # A palette TIFF as Pillow writes it, its colours those five.
    indexed = Image.new("P", (5, 1))
    indexed.putpalette(colors.astype(np.uint8).ravel().tolist())
    indexed.putdata(range(5))
    indexed.save(tmp_path / "pal.tif")
    for name in ("p.gpl", "p.hex", "p.csv", "p.json", "pal.tif"):
        dst = tmp_path / f"{name}.zarr"
        result = cli("compress", photo_tif, dst, "--codebook", tmp_path / name)
        assert result.returncode == 0, (name, result.stderr)
        store = bigquant.open_store(dst)
        np.testing.assert_array_equal(store.codebook, colors, err_msg=name)  # in the file's order
        np.testing.assert_array_equal(store.labels[:], nearest_labels(china[:160, :200], colors))
        assert store.meta.codebook_from["path"] == str(tmp_path / name)


def test_codebooks_that_do_not_fit_get_one_line(tmp_path, china):
    rgb = write_tiff(tmp_path / "rgb.tif", china[:64, :64])
    grey = write_tiff(tmp_path / "grey.tif", china[:64, :64, 0])
    deep = write_tiff(tmp_path / "deep.tif", china[:64, :64].astype(np.uint16) * 257)
    (tmp_path / "p.gpl").write_text("GIMP Palette\n0 0 0 a\n255 255 255 b\n")
    (tmp_path / "big.csv").write_text("0,0,0\n300,0,0\n")
    (tmp_path / "odd.csv").write_text("0,0\n1,2,3\n")
    cases = [
        (grey, tmp_path / "p.gpl", "a codebook of 3 channel(s) does not fit an image of 1"),
        (deep, tmp_path / "p.gpl", "an 8-bit palette does not fit an image of uint16 values"),
        (rgb, tmp_path / "big.csv", "values from 0 to 300 do not fit an image of uint8"),
        (rgb, tmp_path / "odd.csv", "not a readable csv palette"),
        (rgb, tmp_path / "nothing.gpl", "no such file or directory"),
        (rgb, rgb, "not a palette (indexed) TIFF"),
    ]
    for src, codebook, message in cases:
        result = cli("compress", src, tmp_path / "out.zarr", "--codebook", codebook)
        assert result.returncode == 1 and message in result.stderr, (codebook, result.stderr)
        assert result.stderr.count("\n") <= 2 and "Traceback" not in result.stderr
        assert not (tmp_path / "out.zarr").exists()


def test_one_codebook_for_a_collection(tmp_path, collection):
    paths = [path for path, _ in collection.values()]
    result = cli("compress", *paths, "--into", tmp_path / "out", "--colors", 32, "--seed", 2)
    assert result.returncode == 0, result.stderr
    stores = {name: bigquant.open_store(tmp_path / "out" / f"{name}.zarr") for name in collection}
    codebook = stores["astronaut"].codebook
    sizes = {name: im.shape[0] * im.shape[1] for name, (_, im) in collection.items()}
    for name, store in stores.items():
        np.testing.assert_array_equal(store.codebook, codebook)
        origin = store.meta.codebook_from
        assert origin["kind"] == "collection" and origin["paths"] == [str(p) for p in paths]
        # Labels are the exact nearest colours of the shared codebook.
        np.testing.assert_array_equal(
            store.labels[:], nearest_labels(collection[name][1], codebook), err_msg=name
        )
    assert origin["sample_size"] == 250_000 >= sum(sizes.values()) * 0.5
    palette = cli("palette", tmp_path / "out" / "coffee.zarr", tmp_path / "p.png", "-v")
    assert "fitted to a collection of 3 images" in palette.stderr
    # Same seed, same bytes; the library call gives what the command gave.
    again = bigquant.compress_many(paths, tmp_path / "again", 32, seed=2)
    assert [m.n_colors for m in again] == [32] * 3
    np.testing.assert_array_equal(
        bigquant.open_store(tmp_path / "again" / "chelsea.zarr").labels[:],
        stores["chelsea"].labels[:],
    )


def test_collection_codebook_is_as_good_as_one_fitted_to_all_pixels_in_memory(tmp_path, collection):
    paths = [path for path, _ in collection.values()]
    metas = bigquant.compress_many(paths, tmp_path / "out", 64, sample_size=100_000)
    shared_sse = sum(m.mse * np.prod(m.source.shape) for m in metas)
    # The reference: every pixel of every image, concatenated in memory, fitted at once.
    everything = np.concatenate([im.reshape(-1, 1, 3) for _, im in collection.values()])
    whole = bigquant.compress(everything, tmp_path / "all.zarr", 64, sample_size=len(everything))
    whole_sse = whole.mse * everything.size
    assert shared_sse <= 1.05 * whole_sse, shared_sse / whole_sse


def test_collection_errors(tmp_path, collection, china):
    paths = [path for path, _ in collection.values()]
    grey = write_tiff(tmp_path / "grey.tif", china[:50, :50, 0])
    result = cli("compress", paths[0], grey, "--into", tmp_path / "out")
    assert result.returncode == 1 and "images sharing a codebook need the same" in result.stderr
    result = cli("compress", paths[0], tmp_path / "missing.tif", "--into", tmp_path / "out")
    assert result.returncode == 1 and "missing.tif: no such file or directory" in result.stderr
    assert not list((tmp_path / "out").glob("*.zarr")) if (tmp_path / "out").exists() else True
    twice = tmp_path / "again"
    twice.mkdir()
    tifffile.imwrite(twice / "astronaut.tif", collection["astronaut"][1], photometric="rgb")
    result = cli("compress", paths[0], twice / "astronaut.tif", "--into", tmp_path / "out")
    assert result.returncode == 1 and "would both be written to" in result.stderr
    result = cli("compress", paths[0], tmp_path / "a.zarr", tmp_path / "b.zarr")
    assert result.returncode == 2 and "one SRC and one DST" in result.stderr
