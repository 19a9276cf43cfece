"""Previews, palette swatches and terminal swatches of real quantized photographs."""

from __future__ import annotations

import dataclasses
import math
import re

import click
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import made_up_meta
from PIL import Image

from bigquant.errors import BigquantError
from bigquant.pipeline import compress
from bigquant.render import palette_image, preview, terminal_swatches
from bigquant.store import Store, open_store

TILE = 48


def quantized(store: Store) -> np.ndarray:
    return store.codebook[np.asarray(store.labels[:])]


def block_means(image: np.ndarray, f: int) -> np.ndarray:
    """Reference: mean of every f × f block, partial edge blocks over the pixels they have."""
    h, w, c = image.shape
    padded = np.full((math.ceil(h / f) * f, math.ceil(w / f) * f, c), np.nan)
    padded[:h, :w] = image
    return np.nanmean(padded.reshape(padded.shape[0] // f, f, -1, f, c), axis=(1, 3))


def oklab_lightness(rgb8: np.ndarray) -> np.ndarray:
    """OKLab L of 8-bit sRGB colours: the sRGB curve, then bigquant's OKLab matrices
    (which `test_color` checks against Ottosson's published values)."""
    from bigquant.kernels.color import _LMS_TO_OKLAB, _RGB_TO_LMS

    c = rgb8 / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return (np.cbrt(lin @ _RGB_TO_LMS.T) @ _LMS_TO_OKLAB.T)[:, 0]


@pytest.fixture(scope="module")
def china_store(tmp_path_factory, request):
    china = request.getfixturevalue("china")
    path = tmp_path_factory.mktemp("render") / "china.zarr"
    compress(china, path, n_colors=16)
    return open_store(path)


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory, request):
    """The astronaut in awkward 97 × 131 chunks."""
    astronaut = request.getfixturevalue("astronaut")
    path = tmp_path_factory.mktemp("render") / "astronaut.zarr"
    compress(da.from_array(astronaut, chunks=(97, 131, 3)), path, n_colors=16)
    return open_store(path)


def fake_store(tmp_path, codebook: np.ndarray) -> Store:
    """A store of made-up colours over 30 × 20 labels, for cases no photograph gives."""
    labels = zarr.create_array(zarr.storage.MemoryStore(), shape=(30, 20), dtype=np.uint16)
    labels[:] = np.arange(600).reshape(30, 20) % len(codebook)
    return Store(str(tmp_path / "fake.zarr"), labels, codebook, made_up_meta((30, 20), codebook))


@pytest.mark.parametrize("max_size", [1, 7, 100, 639, 640, 5000])
def test_preview_size(china_store, tmp_path, max_size):
    out = tmp_path / "p.png"
    h, w = preview(china_store, out, max_size=max_size)
    f = math.ceil(640 / max_size)
    assert (h, w) == (math.ceil(427 / f), math.ceil(640 / f))
    assert max(h, w) <= max_size
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size == (w, h)
        if max_size >= 640:  # no downsampling: exactly the quantized image
            np.testing.assert_array_equal(np.asarray(im), quantized(china_store))


@pytest.mark.parametrize("max_size", [100, 200, 512])
def test_preview_block_means_on_odd_chunks(odd_store, tmp_path, max_size):
    assert odd_store.labels.chunks == (97, 131)
    out = tmp_path / "p.png"
    preview(odd_store.path, out, max_size=max_size)  # by path this time
    f = math.ceil(512 / max_size)
    expected = block_means(quantized(odd_store).astype(np.float64), f)
    with Image.open(out) as im:
        got = np.asarray(im).astype(np.int16)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1
    assert np.abs(got - expected).mean() < 0.3  # rounding, not a shifted block grid


def test_preview_greyscale(china, tmp_path):
    compress(china[:, :, 0], tmp_path / "grey.zarr", n_colors=8)
    store = open_store(tmp_path / "grey.zarr")
    preview(store, tmp_path / "p.png", max_size=1000)
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), quantized(store)[:, :, 0])


@pytest.mark.parametrize(
    ("dtype", "scale"), [(np.uint16, 257), (np.float32, 1 / 255)], ids=["uint16", "float32"]
)
def test_preview_depths_become_8bit(astronaut, tmp_path, dtype, scale):
    image = (astronaut[:128, :128].astype(np.float64) * scale).astype(dtype)
    compress(image, tmp_path / "s.zarr", n_colors=8)
    store = open_store(tmp_path / "s.zarr")
    preview(store, tmp_path / "p.png")
    cb = store.codebook.astype(np.float64)
    cb8 = np.rint(cb / 257 if dtype == np.uint16 else np.clip(cb, 0, 1) * 255)
    with Image.open(tmp_path / "p.png") as im:
        np.testing.assert_array_equal(np.asarray(im), cb8[np.asarray(store.labels[:])])


def test_preview_alpha_modes_and_channel_limit(tmp_path):
    rng = np.random.default_rng(0)
    for n_channels, mode in [(2, "LA"), (4, "RGBA")]:
        store = fake_store(tmp_path, rng.integers(0, 256, (5, n_channels), dtype=np.uint8))
        preview(store, tmp_path / f"{mode}.png", overwrite=True)
        with Image.open(tmp_path / f"{mode}.png") as im:
            assert im.mode == mode
            np.testing.assert_array_equal(np.asarray(im), quantized(store))
    store = fake_store(tmp_path, rng.integers(0, 256, (5, 5), dtype=np.uint8))
    for draw in (preview, palette_image):
        with pytest.raises(BigquantError, match="1 to 4 channels"):
            draw(store, tmp_path / "five.png")
    assert not (tmp_path / "five.png").exists()


def test_output_guards(china_store, tmp_path):
    out = tmp_path / "p.png"
    preview(china_store, out, max_size=50)
    before = out.read_bytes()
    for draw in (preview, palette_image):
        with pytest.raises(BigquantError, match="already exists"):
            draw(china_store, out)
        assert out.read_bytes() == before
        with pytest.raises(BigquantError, match=r"must end in \.png"):
            draw(china_store, tmp_path / "p.jpg")
    with pytest.raises(BigquantError, match="at least 1"):
        preview(china_store, tmp_path / "q.png", max_size=0)
    with pytest.raises(BigquantError, match="lightness"):
        palette_image(china_store, tmp_path / "q.png", sort="hue")
    assert preview(china_store, out, max_size=80, overwrite=True) == (54, 80)
    assert out.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]  # no partial files left


def tile_corners(path, n: int) -> np.ndarray:
    """The bottom-right pixel of each of the first n tiles, where no text is drawn."""
    with Image.open(path) as im:
        pixels = np.asarray(im)
        tile = TILE if n <= 256 else 8
        columns = pixels.shape[1] // tile
        return np.array(
            [pixels[(k // columns + 1) * tile - 2, (k % columns + 1) * tile - 2] for k in range(n)]
        )


def test_palette_by_lightness(china_store, tmp_path):
    out = tmp_path / "pal.png"
    assert palette_image(china_store, out) == 16
    with Image.open(out) as im:
        assert im.size == (4 * TILE, 4 * TILE)
        pixels = np.asarray(im)
    corners = tile_corners(out, 16)
    # Every codebook colour exactly once, dark to light.
    assert sorted(map(tuple, corners)) == sorted(map(tuple, china_store.codebook.tolist()))
    assert np.all(np.diff(oklab_lightness(corners)) >= 0)
    # Labels: white text on the darkest tile, black on the lightest.
    first, last = pixels[:TILE, :TILE], pixels[-TILE:, -TILE:]
    assert first.max() > 200 and (first.reshape(-1, 3) != corners[0]).any(axis=1).sum() > 20
    assert last.min() < 60


def test_palette_by_count(china_store, tmp_path):
    out = tmp_path / "pal.png"
    palette_image(china_store, out, sort="count")
    counts = np.asarray(china_store.meta.counts)
    expected = china_store.codebook[np.argsort(-counts, kind="stable")]
    np.testing.assert_array_equal(tile_corners(out, 16), expected)
    meta = dataclasses.replace(china_store.meta, counts=None)
    no_counts = Store(china_store.path, china_store.labels, china_store.codebook, meta)
    with pytest.raises(BigquantError, match="no pixel counts"):
        palette_image(no_counts, tmp_path / "none.png", sort="count")
    assert palette_image(no_counts, tmp_path / "none.png") == 16  # lightness needs none


def test_palette_many_colours_plain_small_tiles(tmp_path):
    rng = np.random.default_rng(1)
    codebook = rng.integers(0, 65536, (1000, 3), dtype=np.uint16)
    out = tmp_path / "pal.png"
    assert palette_image(fake_store(tmp_path, codebook), out) == 1000
    with Image.open(out) as im:
        assert im.size == (32 * 8, 32 * 8)
        pixels = np.asarray(im).astype(np.int64)
    corners = tile_corners(out, 1000)
    assert sorted(map(tuple, corners)) == sorted(map(tuple, np.rint(codebook / 257).astype(int)))
    tiles = pixels[: 31 * 8].reshape(31, 8, 32, 8, 3)
    assert (tiles == tiles[:, :1, :, :1]).all()  # no text on small tiles


def test_terminal_swatches(china_store):
    codebook, counts = china_store.codebook, china_store.meta.counts
    text = terminal_swatches(codebook, counts, limit=5)
    shown = [tuple(map(int, m)) for m in re.findall(r"48;2;(\d+);(\d+);(\d+)m", text)]
    order = np.argsort(-np.asarray(counts), kind="stable")
    assert shown == [tuple(codebook[i].tolist()) for i in order[:5]]
    assert text.splitlines()[-1] == "… and 11 more"
    plain = click.unstyle(text)
    r, g, b = codebook[order[0]]
    assert f"#{r:02x}{g:02x}{b:02x}" in plain.splitlines()[0]
    assert "\x1b" not in plain and "%" in plain

    everything = terminal_swatches(codebook, None)
    assert "more" not in everything
    shown = [tuple(map(int, m)) for m in re.findall(r"48;2;(\d+);(\d+);(\d+)m", everything)]
    assert shown == [tuple(c) for c in codebook.tolist()]  # index order without counts
    assert 1 < len(everything.splitlines()) < 16  # several a line


def test_terminal_swatches_grey_and_deep():
    grey = np.array([[0], [65535], [257 * 0x80]], dtype=np.uint16)
    plain = click.unstyle(terminal_swatches(grey, [1, 5, 3]))
    assert plain.index("#ffffff") < plain.index("#808080") < plain.index("#000000")
    floats = np.array([[1.0, 0.5, -0.2]], dtype=np.float32)
    assert "48;2;255;128;0m" in terminal_swatches(floats, None)


def test_swatch_counts_are_short():
    from bigquant.render import _short

    counts = [0, 987, 1000, 12_345, 4_500_000, 1_234_567_890, 999_999, 123_456_789_012]
    assert [_short(n) for n in counts] == [
        "0",
        "987",
        "1.0k",
        "12.3k",
        "4.5M",
        "1.2G",
        "1000k",
        "123G",
    ]
