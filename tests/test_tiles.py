"""Web tiles: every pixel is the codebook's colour of its label, one palette, no seams."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import threading
import zlib
from pathlib import Path
from xml.etree import ElementTree

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
from conftest import cli, made_up_meta
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import bigquant
from bigquant.kernels.downsample import mode_2x2
from bigquant.store import create_store, finish_store, open_store
from bigquant.tiles import DeepZoom, write_tiles

TILE, OVERLAP = 254, 1


@pytest.fixture(scope="module")
def photo_stores(tmp_path_factory, astronaut) -> dict[bool, Path]:
    """The astronaut in 16 colours, chunks of 96 (tiles cross chunk borders), with and without
    a label pyramid (the same labels: same seed)."""
    where = tmp_path_factory.mktemp("stores")
    image = da.from_array(astronaut, chunks=(96, 96, 3))
    stores = {}
    for pyramid in (False, True):
        stores[pyramid] = where / f"astronaut-{pyramid}.zarr"
        bigquant.compress(image, stores[pyramid], 16, pyramid=pyramid)
    return stores


def png_chunks(path) -> dict[bytes, bytes]:
    """A PNG's chunks by type (the last of each), read without Pillow."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, i = {}, 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        assert struct.unpack(">I", data[i + 8 + n : i + 12 + n])[0] == zlib.crc32(kind + body)
        found[kind], i = body, i + 12 + n
    return found


def level_labels(labels: np.ndarray, halvings: int) -> np.ndarray:
    for _ in range(halvings):
        labels = mode_2x2(labels)
    return labels


def test_deep_zoom_tiles_are_codebook_of_labels_at_every_level(tmp_path, photo_stores):
    """Level 0 equals the decompressed image (overlaps included: no seams), lower levels the
    2x2 mode of the labels, with or without the store's pyramid; one PLTE in every tile."""
    decompressed = tmp_path / "astronaut.tif"
    bigquant.decompress(photo_stores[False], decompressed)
    image = tifffile.imread(decompressed)
    store = open_store(photo_stores[False])
    labels, codebook = store.labels[:], store.codebook
    for pyramid, src in photo_stores.items():
        out = tmp_path / f"dz-{pyramid}"
        assert write_tiles(src, out) == 21  # 3x3 + 2x2 + one tile at each of 8 levels
        dzi = (tmp_path / f"dz-{pyramid}.dzi").read_text()
        assert 'Overlap="1" TileSize="254"' in dzi and '<Size Width="512" Height="512"/>' in dzi
        root = tmp_path / f"dz-{pyramid}_files"
        top = math.ceil(math.log2(512))
        assert sorted(int(p.name) for p in root.iterdir() if p.is_dir()) == list(range(top + 1))
        for level in range(top + 1):
            expected = level_labels(labels, top - level)
            side = math.ceil(512 / 2 ** (top - level))
            assert expected.shape == (side, side)
            n = math.ceil(side / TILE)
            names = {p.name for p in (root / str(level)).iterdir()}
            assert names == {f"{c}_{r}.png" for c in range(n) for r in range(n)}
            for c in range(n):
                for r in range(n):
                    x0, y0 = max(c * TILE - OVERLAP, 0), max(r * TILE - OVERLAP, 0)
                    x1, y1 = (
                        min((c + 1) * TILE + OVERLAP, side),
                        min((r + 1) * TILE + OVERLAP, side),
                    )
                    path = root / str(level) / f"{c}_{r}.png"
                    assert png_chunks(path)[b"PLTE"] == codebook.tobytes()
                    with Image.open(path) as tile:
                        assert tile.mode == "P"
                        np.testing.assert_array_equal(np.asarray(tile), expected[y0:y1, x0:x1])
                        rgb = np.asarray(tile.convert("RGB"))
                    if level == top:
                        np.testing.assert_array_equal(rgb, image[y0:y1, x0:x1])
                    else:
                        np.testing.assert_array_equal(rgb, codebook[expected[y0:y1, x0:x1]])


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory, astronaut) -> Path:
    """An odd-sized photograph in 16 colours, in small chunks, without a pyramid."""
    path = tmp_path_factory.mktemp("odd") / "odd.zarr"
    bigquant.compress(da.from_array(astronaut[:509, :457], chunks=(64, 64, 3)), path, 16)
    return path


@pytest.mark.parametrize("step", [1, 2, 3])
def test_levels_made_every_few_halvings_are_the_levels_and_give_the_same_tiles(
    tmp_path, odd_store, step
):
    """`make_levels` of a store without a pyramid, every level (tiles) or every few in one
    pass each (the viewer): each is the 2x2 mode of the labels halved that often, on an
    odd-sized image in small chunks; and Deep Zoom tiles from such sparse levels are the
    tiles from all of them."""
    from bigquant.tiles import make_levels

    store = open_store(odd_store)
    labels = store.labels[:]
    dz = DeepZoom(store, 62, 1)
    (tmp_path / "levels").mkdir()
    made = list(make_levels(store.labels, str(tmp_path / "levels"), store, step=step))
    assert [n for n, _ in made] == sorted({*range(step, 3 + 1, step), 3})  # 509 -> 64: 3
    for n, level in made:
        np.testing.assert_array_equal(level[:, :], level_labels(labels, n))
        dz.add_level(n, level)
    assert len(dz.levels) == 4 and sum(level is None for level in dz.levels) == 3 - len(made)
    dense = DeepZoom(store, 62, 1)
    for level in range(dz.top + 1):
        cols, rows = dz.grid(level)
        for c, r in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            assert dz.tile(level, c, r) == dense.tile(level, c, r), (level, c, r)


def test_one_tile_on_demand_reads_only_its_window(photo_stores):
    """`DeepZoom.tile` of a deep level reads the few labels it needs, not the whole image."""
    store = open_store(photo_stores[False])
    dz = DeepZoom(store)
    reads = []

    class Counting:
        def __init__(self, labels):
            self.labels, self.shape, self.chunks = labels, labels.shape, labels.chunks

        def __getitem__(self, index):
            reads.append(index)
            return self.labels[index]

    dz.levels[0].labels = Counting(store.labels)
    with Image.open(io.BytesIO(dz.tile(dz.top, 1, 1))) as tile:
        assert tile.size == (256, 256)
        np.testing.assert_array_equal(np.asarray(tile), store.labels[253:509, 253:509])
    assert reads == [(slice(253, 509), slice(253, 509))]


def test_rerun_writes_only_missing_tiles(tmp_path, photo_stores):
    """An interrupted run (no .dzi, some tiles missing) is finished, not redone; a finished one
    is refused without --overwrite, and other tiles are never mixed in."""
    out, root = tmp_path / "dz", tmp_path / "dz_files"
    assert cli("tiles", photo_stores[True], out).returncode == 0
    tiles = sorted(root.glob("*/*.png"))
    for p in tiles:  # marked as written long ago: a tile written again is newer
        os.utime(p, ns=(0, 0))
    gone = [root / "9" / "1_1.png", root / "8" / "0_1.png", root / "0" / "0_0.png"]
    for p in gone:
        p.unlink()

    refused = cli("tiles", photo_stores[True], out)
    assert refused.returncode == 1
    assert (
        refused.stderr
        == f"bigquant: error: {out}.dzi already exists (use --overwrite to replace it)\n"
    )

    (tmp_path / "dz.dzi").unlink()
    assert write_tiles(photo_stores[True], out) == 3
    assert sorted(root.glob("*/*.png")) == tiles
    assert [p for p in tiles if p.stat().st_mtime_ns != 0] == sorted(gone)
    assert not list(tmp_path.glob("**/*.part")) and not list(tmp_path.glob(".bigquant-levels-*"))

    (tmp_path / "dz.dzi").unlink()
    other = cli("tiles", photo_stores[True], out, "--tile-size", "128")
    assert other.returncode == 1
    assert "holds tiles of another store or other options (use --overwrite" in other.stderr
    assert (
        cli("tiles", photo_stores[True], out, "--tile-size", "128", "--overwrite").returncode == 0
    )
    assert {p.name for p in (root / "9").iterdir()} == {
        f"{c}_{r}.png" for c in range(4) for r in range(4)
    }


def test_an_interrupted_run_leaves_no_half_tile_and_is_finished(
    tmp_path, photo_stores, monkeypatch
):
    """Cut short while writing its 6th tile, a run leaves that tile under its temporary name
    only; the next run removes it and writes just the tiles still missing."""
    renames = []

    def replace(src, dst):
        renames.extend([dst] if dst.endswith(".png") else [])  # not the manifest's
        if len(renames) == 6:
            raise KeyboardInterrupt
        os.rename(src, dst)

    monkeypatch.setattr("bigquant.tiles.os.replace", replace)
    # One task at a time: on threads, the tasks already running go on after the interrupt.
    with pytest.raises(KeyboardInterrupt), dask.config.set(scheduler="synchronous"):
        write_tiles(photo_stores[True], tmp_path / "dz")
    monkeypatch.undo()
    root = tmp_path / "dz_files"
    written = {p for p in root.glob("*/*.png")}
    assert len(list(root.glob("*/*.part"))) >= 1 and len(written) >= 5
    assert not (tmp_path / "dz.dzi").exists() and renames[5] not in map(str, written)
    assert write_tiles(photo_stores[True], tmp_path / "dz") == 21 - len(written)
    assert not list(root.glob("*/*.part")) and len(list(root.glob("*/*.png"))) == 21


@pytest.mark.parametrize(
    ("shape", "tile_size", "overlap"),
    [((512, 512), 254, 1), ((300, 500), 100, 3), ((1, 7), 254, 1)],
)
def test_deep_zoom_layout_matches_libvips_dzsave(tmp_path, photo_labels, shape, tile_size, overlap):
    """The same levels, tile names and tile sizes as libvips' own Deep Zoom writer."""
    pyvips = pytest.importorskip("pyvips", reason="pyvips is not installed (optional)")
    labels = np.resize(photo_labels, shape)
    codebook = np.array([[16 * i] * 3 for i in range(16)], np.uint8)
    src = made_up_store(tmp_path / "s.zarr", labels, codebook)
    write_tiles(src, tmp_path / "ours", tile_size=tile_size, overlap=overlap)
    theirs = pyvips.Image.new_from_array(labels.astype(np.uint8))
    theirs.dzsave(str(tmp_path / "vips"), suffix=".png", tile_size=tile_size, overlap=overlap)

    def layout(root: Path) -> dict[str, tuple[int, int]]:
        sizes = {}
        for path in sorted(root.glob("*/*.png")):
            with Image.open(path) as tile:
                sizes[str(path.relative_to(root))] = tile.size
        return sizes

    assert layout(tmp_path / "ours_files") == layout(tmp_path / "vips_files")

    def dzi(path: Path) -> tuple[dict, dict]:
        image = ElementTree.parse(path).getroot()
        return image.attrib, image[0].attrib

    assert dzi(tmp_path / "ours.dzi") == dzi(tmp_path / "vips.dzi")


def made_up_store(path, labels: np.ndarray, codebook: np.ndarray, **fields):
    partial = create_store(
        str(path), (64, 64), codebook, made_up_meta(labels.shape, codebook, **fields)
    )
    partial.labels[:] = labels
    finish_store(partial, partial.meta)
    return path


@pytest.fixture(scope="module")
def photo_labels(astronaut) -> np.ndarray:
    """Labels 0..15 of a 300 x 500 crop of the photograph (its grey level in 16 steps)."""
    return (astronaut[:300, :500].mean(axis=2) // 16).astype(np.uint8)


def test_nodata_is_the_transparent_palette_entry(tmp_path, photo_labels):
    codebook = np.array([[16 * i, 255 - 16 * i, 7 * i] for i in range(16)], np.uint8)
    src = made_up_store(
        tmp_path / "nd.zarr", photo_labels, codebook, nodata=0, nodata_label=15, n_colors=15
    )
    write_tiles(src, tmp_path / "dz")
    alpha = np.full(16, 255, np.uint8)
    alpha[15] = 0
    for path in (tmp_path / "dz_files").glob("*/*.png"):
        chunks = png_chunks(path)
        assert chunks[b"PLTE"] == codebook.tobytes()
        assert chunks[b"tRNS"] == alpha.tobytes()
    with Image.open(tmp_path / "dz_files" / "9" / "0_0.png") as tile:
        rgba = np.asarray(tile.convert("RGBA"))
    window = photo_labels[:255, :255]
    np.testing.assert_array_equal(rgba[:, :, 3] == 0, window == 15)
    np.testing.assert_array_equal(rgba[:, :, :3], codebook[window])


def test_more_than_256_colours_give_rgb_tiles(tmp_path, astronaut):
    labels = (astronaut[:300, :500, 0].astype(np.uint16) * 300 // 256).astype(np.uint16)
    rng = np.random.default_rng(0)
    codebook = rng.integers(0, 256, (300, 3), dtype=np.uint8)
    src = made_up_store(tmp_path / "many.zarr", labels, codebook)
    write_tiles(src, tmp_path / "dz")
    with Image.open(tmp_path / "dz_files" / "9" / "1_0.png") as tile:
        assert tile.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(tile), codebook[labels[:255, 253:509]])


def test_xyz_layout_pads_edge_tiles_transparent(tmp_path, photo_labels):
    """z/x/y with 256-pixel tiles: zoom 1 full resolution (300 x 500 fits 512), zoom 0 one tile
    of the 2x2 mode; past the image the extra palette entry 16, transparent."""
    codebook = np.array([[16 * i, 255 - 16 * i, 7 * i] for i in range(16)], np.uint8)
    src = made_up_store(tmp_path / "s.zarr", photo_labels, codebook)
    result = cli("tiles", "--layout", "xyz", src, tmp_path / "xyz")
    assert result.returncode == 0, result.stderr
    found = sorted(
        str(p.relative_to(tmp_path / "xyz")) for p in (tmp_path / "xyz").glob("*/*/*.png")
    )
    assert found == ["0/0/0.png", "1/0/0.png", "1/0/1.png", "1/1/0.png", "1/1/1.png"]
    for z, labels in ((1, photo_labels), (0, mode_2x2(photo_labels))):
        padded = np.full((256 * 2**z, 256 * 2**z), 16, np.uint8)
        padded[: labels.shape[0], : labels.shape[1]] = labels
        for x in range(2**z):
            for y in range(2**z):
                path = tmp_path / "xyz" / str(z) / str(x) / f"{y}.png"
                chunks = png_chunks(path)
                assert chunks[b"PLTE"] == codebook.tobytes() + b"\0\0\0"
                assert chunks[b"tRNS"] == b"\xff" * 16 + b"\0"
                with Image.open(path) as tile:
                    want = padded[256 * y : 256 * (y + 1), 256 * x : 256 * (x + 1)]
                    np.testing.assert_array_equal(np.asarray(tile), want)
    again = cli("tiles", "--layout", "xyz", src, tmp_path / "xyz")
    assert again.returncode == 1 and "already exists (use --overwrite" in again.stderr


def test_xyz_of_256_colours_pads_edge_tiles_in_rgba(tmp_path, astronaut):
    """A full palette has no entry left for the padding: tiles that need it are RGBA (same
    colours, padding transparent); every other tile keeps the codebook as its palette."""
    labels = astronaut[:300, :500, 1]
    codebook = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
    write_tiles(
        made_up_store(tmp_path / "s.zarr", labels, codebook), tmp_path / "xyz", layout="xyz"
    )
    with Image.open(tmp_path / "xyz" / "1" / "0" / "0.png") as full:
        assert full.mode == "P" and png_chunks(full.filename)[b"PLTE"] == codebook.tobytes()
        np.testing.assert_array_equal(np.asarray(full), labels[:256, :256])
    with Image.open(tmp_path / "xyz" / "1" / "1" / "1.png") as edge:
        assert edge.mode == "RGBA" and edge.size == (256, 256)
        rgba = np.asarray(edge)
    np.testing.assert_array_equal(rgba[:44, :244, :3], codebook[labels[256:, 256:]])
    assert (
        (rgba[:44, :244, 3] == 255).all()
        and not rgba[44:, :, 3].any()
        and not rgba[:, 244:, 3].any()
    )


def test_bad_input_is_one_line(tmp_path, photo_stores):
    for args, message in (
        (("tiles", tmp_path / "nothing.zarr", tmp_path / "o"), "no such file or directory"),
        (
            ("tiles", photo_stores[False], tmp_path / "o", "--tile-size", "0"),
            "--tile-size must be at least 1",
        ),
        (("tiles", photo_stores[False], tmp_path / "no" / "o"), "no such directory"),
        (
            ("tiles", photo_stores[False], photo_stores[False], "--layout", "xyz", "--overwrite"),
            "the tiles would overwrite their own store",
        ),
        (("tiles", photo_stores[False], photo_stores[False] / "tiles"), "their own store"),
    ):
        result = cli(*args)
        assert result.returncode == 1
        assert result.stderr.startswith("bigquant: error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1
    assert not os.path.exists(tmp_path / "o_files")
    assert open_store(photo_stores[False]).labels.nchunks_initialized == 36  # left whole


@pytest.mark.parametrize("layout", ["xyz", "deepzoom"])
def test_a_folder_of_other_files_is_never_emptied(tmp_path, photo_stores, layout):
    """OUT (or OUT_files) holding the user's own files: refused in one line, `--overwrite` or
    not, and every file kept; a file where the folder would go likewise."""
    folder = tmp_path / ("docs" if layout == "xyz" else "docs_files")
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    (tmp_path / "afile").write_text("mine")
    for out, message in ((tmp_path / "docs", "holds files that are not bigquant tiles"),
                         (tmp_path / "afile", "is a file, not a folder of tiles")):  # fmt: skip
        if layout == "deepzoom" and out.name == "afile":
            (tmp_path / "afile_files").write_text("mine")
        for extra in ((), ("--overwrite",)):
            result = cli("tiles", photo_stores[False], out, "--layout", layout, *extra)
            assert result.returncode == 1 and message in result.stderr, result.stderr
            assert result.stderr.count("\n") == 1 and "nothing was deleted" in result.stderr
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_file_url_is_a_local_folder(tmp_path, photo_stores):
    """``file://`` OUT: the same tiles as the path, each renamed into place."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    n = write_tiles(photo_stores[False], tmp_path / "a" / "t")
    assert write_tiles(photo_stores[False], f"file://{tmp_path}/b/t") == n
    for png_file in (tmp_path / "a").rglob("*.png"):
        assert (
            png_file.read_bytes()
            == (tmp_path / "b" / png_file.relative_to(tmp_path / "a")).read_bytes()
        )
    assert not list(tmp_path.glob("*/.bigquant-levels-*"))  # the lower levels, removed


def test_a_run_into_tiles_another_run_is_writing_stops_at_once(tmp_path, photo_stores):
    lock, host = tmp_path / ".o.dzi.lock", socket.gethostname()
    # A live run's claim (this process's pid stands for it).
    lock.write_text(json.dumps({"pid": os.getpid(), "host": host, "since": "noon"}))
    result = cli("tiles", photo_stores[False], tmp_path / "o")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "o.dzi is being written by another run (pid" in result.stderr
    assert not (tmp_path / "o_files").exists()
    # A gone run's claim is taken over: its tiles are whole, a rerun finishes them.
    lock.write_text(json.dumps({"pid": 2**22 + 1, "host": host, "since": "noon"}))
    assert cli("tiles", photo_stores[False], tmp_path / "o").returncode == 0
    assert (tmp_path / "o.dzi").exists() and not lock.exists()


# -- In the viewers people use: OpenSeadragon and Leaflet, in a headless chromium ---------------

NPM = Path(__file__).parent.parent / ".ci" / "npm" / "node_modules"
#: The browser's window on the image: a region across the tile borders at 254 (Deep Zoom) and
#: 256 (XYZ), drawn at 1:1.
VIEW_W, VIEW_H, LEFT, TOP = 400, 300, 100, 150

OPENSEADRAGON_PAGE = """<!doctype html>
<html><head><style>html, body {{ margin: 0; background: #000 }}
#view {{ width: {w}px; height: {h}px }}</style>
<script src="openseadragon/openseadragon.min.js"></script></head>
<body><div id="view"></div><script>
// The canvas drawer with smoothing off: at 1:1 every screen pixel is one tile pixel.
window.viewer = OpenSeadragon({{
  id: "view", tileSources: "dz.dzi", drawer: "canvas", imageSmoothingEnabled: false,
  showNavigationControl: false, animationTime: 0, blendTime: 0, immediateRender: false,
  minPixelRatio: 1, visibilityRatio: 0, constrainDuringPan: false, minZoomImageRatio: 0,
  maxZoomPixelRatio: 100,
}});
viewer.addHandler("open", () => {{
  const vp = viewer.viewport;
  vp.fitBounds(vp.imageToViewportRectangle({left}, {top}, {w}, {h}), true);
}});
</script></body></html>
"""

LEAFLET_PAGE = """<!doctype html>
<html><head><link rel="stylesheet" href="leaflet/leaflet.css">
<style>html, body {{ margin: 0; background: #000 }} #view {{ width: {w}px; height: {h}px }}</style>
<script src="leaflet/leaflet.js"></script></head>
<body><div id="view"></div><script>
const zmax = {zoom};  // not `top`: window.top is taken
window.map = L.map("view", {{
  crs: L.CRS.Simple, zoomControl: false, attributionControl: false,
  fadeAnimation: false, zoomAnimation: false, minZoom: 0, maxZoom: zmax,
}});
window.loaded = false;
L.tileLayer("xyz/{{z}}/{{x}}/{{y}}.png", {{ tileSize: 256, noWrap: true, minZoom: 0, maxZoom: zmax }})
  .on("load", () => {{ window.loaded = true; }})
  .addTo(map);
// The container's centre on image pixel (left + w/2, top + h/2), at zoom zmax: 1:1.
map.setView(map.unproject([{left} + {w} / 2, {top} + {h} / 2], zmax), zmax, {{ animate: false }});
</script></body></html>
"""


@contextlib.contextmanager
def served(root: Path):
    """``root`` over HTTP on 127.0.0.1 (a free port), from a thread; its base URL."""
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines in the test output
        pass


def viewer_site(tmp_path: Path, package: str, build: str) -> Path:
    """A folder to serve: the npm package's build (or a skip, before `npm ci`). Tests call it
    before they ask for the browser, so that a skip starts none."""
    if not (NPM / package).is_dir():
        pytest.skip(
            f"{NPM / package} is missing: run `npm ci --prefix .ci/npm` (.ci/tiles-setup.sh)"
        )
    site = tmp_path / "site"
    site.mkdir()
    (site / package).symlink_to(NPM / package / build)
    return site


def screenshot(browser, url: str, ready: str) -> np.ndarray:
    """The RGB pixels of the page's viewer element once ``ready`` (JavaScript) is true."""
    page = browser.new_page(viewport={"width": VIEW_W, "height": VIEW_H}, device_scale_factor=1)
    try:
        page.goto(url)
        page.wait_for_function(ready, timeout=20_000)
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        png = page.locator("#view").screenshot()
    finally:
        page.close()
    with Image.open(io.BytesIO(png)) as shot:
        return np.asarray(shot.convert("RGB"))


def test_openseadragon_shows_the_deep_zoom_tiles_at_1_to_1(tmp_path, photo_stores, request):
    """The screenshot across tile borders is codebook[labels], pixel for pixel."""
    site = viewer_site(tmp_path, "openseadragon", "build/openseadragon")
    write_tiles(photo_stores[False], site / "dz")
    page = OPENSEADRAGON_PAGE.format(w=VIEW_W, h=VIEW_H, left=LEFT, top=TOP)
    (site / "index.html").write_text(page)
    store = open_store(photo_stores[False])
    ready = (
        "window.viewer && viewer.world.getItemCount() && viewer.world.getItemAt(0).getFullyLoaded()"
    )
    with served(site) as url:
        shot = screenshot(request.getfixturevalue("browser"), f"{url}/index.html", ready)
    expected = store.codebook[store.labels[TOP : TOP + VIEW_H, LEFT : LEFT + VIEW_W]]
    np.testing.assert_array_equal(shot, expected)


def test_leaflet_shows_the_xyz_tiles_at_1_to_1(tmp_path, photo_stores, request):
    site = viewer_site(tmp_path, "leaflet", "dist")
    write_tiles(photo_stores[False], site / "xyz", layout="xyz")
    page = LEAFLET_PAGE.format(w=VIEW_W, h=VIEW_H, left=LEFT, top=TOP, zoom=1)
    (site / "index.html").write_text(page)
    store = open_store(photo_stores[False])
    with served(site) as url:
        shot = screenshot(request.getfixturevalue("browser"), f"{url}/index.html", "window.loaded")
    expected = store.codebook[store.labels[TOP : TOP + VIEW_H, LEFT : LEFT + VIEW_W]]
    np.testing.assert_array_equal(shot, expected)


def _png_case(pixels: np.ndarray, opaque: bool) -> tuple[bytes, np.ndarray | None]:
    from bigquant.kernels import png

    palette = None
    if pixels.ndim == 2:
        rng = np.random.default_rng(int(pixels.sum()))
        palette = rng.integers(0, 256, (int(pixels.max()) + 1, 4), dtype=np.uint8)
        if opaque:
            palette[:, 3] = 255
    return png.encode(pixels, palette), palette


@settings(max_examples=40, deadline=None)
@given(
    pixels=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([0, 3, 4])).map(
            lambda s: s[:2] if s[2] == 0 else s
        ),
    ),
    opaque=st.booleans(),
)
def test_png_kernel_reads_back_exactly_in_pillow(pixels, opaque):
    """Our PNG writer (libdeflate, no row filters): indexed pixels with their palette and
    alpha, RGB and RGBA colours, odd sizes, as Pillow reads them."""
    data, palette = _png_case(pixels, opaque)
    image = Image.open(io.BytesIO(data))
    np.testing.assert_array_equal(np.asarray(image), pixels)
    if palette is None:
        assert image.mode == ("RGB" if pixels.shape[2] == 3 else "RGBA")
    else:
        assert image.mode == "P"
        assert image.getpalette()[: 3 * len(palette)] == palette[:, :3].ravel().tolist()
        assert image.info.get("transparency") == (None if opaque else palette[:, 3].tobytes())
        np.testing.assert_array_equal(np.asarray(image.convert("RGBA")), palette[pixels])


@pytest.mark.skipif(not shutil.which("gdal_translate"), reason="GDAL is not installed")
@pytest.mark.parametrize("colours", [2, 4, 16, 200, "rgb", "rgba"])
def test_png_kernel_reads_back_exactly_in_gdal(colours, astronaut, tmp_path):
    """The PNGs through GDAL's PNG driver (into a TIFF tifffile reads), at an odd width: every
    bit depth of indexed pixels (1, 2, 4, 8) with a transparent entry, RGB and RGBA."""
    from bigquant.kernels import png

    crop = astronaut[:37, :53]
    palette = None
    if colours == "rgb":
        pixels = crop
    elif colours == "rgba":
        pixels = np.dstack([crop, crop[:, :, 1]])
    else:
        pixels = (crop[:, :, 0].astype(int) * colours // 256).astype(np.uint8)
        palette = np.random.default_rng(colours).integers(0, 256, (colours, 4), dtype=np.uint8)
        palette[:, 3] = 255
        palette[1, 3] = 0  # one transparent entry (the nodata label's)
    (tmp_path / "t.png").write_bytes(png.encode(pixels, palette))
    subprocess.run(
        ["gdal_translate", "-q", str(tmp_path / "t.png"), str(tmp_path / "t.tif")], check=True
    )
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), pixels)
        if palette is not None:
            colormap = tif.pages[0].colormap  # 16-bit entries: 8-bit value * 257
            np.testing.assert_array_equal(colormap[:, :colours].T // 257, palette[:, :3])
    info = subprocess.run(
        ["gdalinfo", str(tmp_path / "t.png")], capture_output=True, text=True, check=True
    ).stdout
    if palette is not None:  # GDAL reads the tRNS entry as the colour's alpha
        assert "1: " in info and f"{palette[1, 0]},{palette[1, 1]},{palette[1, 2]},0" in info


def test_png_kernel_refuses_an_index_past_its_palette():
    from bigquant.kernels import png

    with pytest.raises(ValueError, match="index 5 past the 2-colour palette"):
        png.encode(np.array([[0, 5]], np.uint8), np.zeros((2, 4), np.uint8))
