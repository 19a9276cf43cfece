"""bigquant view: the server answers only its own routes, its tiles are the store's, and the page
works in a real browser (tiles load, a palette click changes the pixels, the source shows)."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile
from conftest import made_up_meta, sigint_as_a_terminal_gives_it, write_tiff
from PIL import Image

import bigquant
from bigquant.kernels.downsample import mode_2x2
from bigquant.store import create_store, finish_store, open_store
from bigquant.tiles import DeepZoom, write_tiles
from bigquant.view import Server, Viewer, dim


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut):
    """The astronaut as a tiled TIFF and its 16-colour store in 128² chunks, no pyramid (the
    viewer makes the levels), made from that file (the source the viewer shows)."""
    where = tmp_path_factory.mktemp("view")
    src = write_tiff(where / "astronaut.tif", astronaut)
    store = where / "astronaut.zarr"
    bigquant.compress(src, store, 16, chunks=128)
    return src, store


@contextlib.contextmanager
def serving(store, **kwargs):
    """The viewer of ``store`` served from a thread; yields the server."""
    with Viewer(store, **kwargs) as viewer, Server(viewer) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()


def get(server, path: str, host: str | None = None) -> tuple[int, bytes, str]:
    """GET ``path`` sent exactly as written (no client-side normalising or quoting)."""
    conn = http.client.HTTPConnection(*server.server_address, timeout=60)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{server.server_address[1]}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "")
    finally:
        conn.close()


def png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_serves_only_its_files_and_the_stores_tiles(tmp_path, photo):
    """Paths that climb out, are absolute or encode slashes or dots, name the store's own files,
    or a tile past the grid: 404. The page, its data and real tiles: 200."""
    _, store = photo
    (tmp_path / "secret.txt").write_text("secret")
    with serving(store) as server:
        assert server.server_address[0] == "127.0.0.1"
        for path in ("/", "/index.html", "/viewer.js", "/viewer.css", "/info.json",
                     "/tile/9/0_0.png", "/tile/0/0_0.png", "/pixel/3/4.json",
                     "/highlight/3/9/1_1.png", "/source/9/2_2.png", "/tile/9/0_0.png?x=1"):  # fmt: skip
            status, body, _ = get(server, path)
            assert status == 200, path
            assert body
        for path in (
            "/../secret.txt",
            "/tile/../../secret.txt",
            "/tile/9/../../zarr.json",
            "/%2e%2e/%2e%2e/secret.txt",
            "/tile/9%2F0_0.png",
            "/tile/9/0_0.png%00",
            "//etc/passwd",
            "/etc/passwd",
            str(tmp_path / "secret.txt"),
            f"/{store}/zarr.json",
            "/zarr.json",
            "/labels/c/0/0",
            "/viewer.js/../info.json",
            "/viewer/index.html",
            "/tile/9/3_0.png",  # past the 3 x 3 grid
            "/tile/10/0_0.png",
            "/highlight/16/9/0_0.png",
            "/pixel/512/0.json",
            "http://127.0.0.1/etc/passwd",
        ):
            status, body, _ = get(server, path)
            assert status == 404, path
            assert b"secret" not in body and b"root:" not in body
        # Another site's name pointed at 127.0.0.1 (DNS rebinding): refused, page and all.
        port = server.server_address[1]
        assert get(server, "/info.json", host=f"localhost:{port}")[0] == 200
        for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1.evil.example:{port}"):
            assert get(server, "/info.json", host=host)[0] == 404
            assert get(server, "/", host=host)[0] == 404


def test_a_tile_symlinked_out_of_the_tiles_folder_is_404(tmp_path, photo):
    """Tiles of `bigquant tiles` are served from their folder (a changed file shows as served);
    a file there that resolves outside it is refused, not followed."""
    _, store = photo
    write_tiles(store, tmp_path / "dz")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (3, 3), "red").save(outside)
    root = tmp_path / "dz_files" / "9"
    (root / "0_0.png").unlink()
    (root / "0_0.png").symlink_to(outside)
    marker = Image.new("RGB", (256, 256), "blue")
    marker.save(root / "1_1.png")
    with serving(store, tiles=tmp_path / "dz.dzi") as server:
        assert get(server, "/tile/9/0_0.png")[0] == 404
        status, body, _ = get(server, "/tile/9/1_1.png")
        assert status == 200 and body == (root / "1_1.png").read_bytes()
        (root / "2_2.png").unlink()  # missing: rendered, as `bigquant tiles` wrote it
        status, body, _ = get(server, "/tile/9/2_2.png")
        assert status == 200 and body == DeepZoom(store).tile(9, 2, 2)


def test_tiles_are_the_stores_at_every_level_made_in_the_background(photo):
    """The store has no pyramid: the viewer makes its levels; every tile equals what
    `bigquant tiles` writes (level 9 full resolution, lower ones the 2x2 mode), and the
    temporary levels are gone once the viewer closes."""
    _, store = photo
    opened = open_store(store)
    labels, codebook = opened.labels[:], opened.codebook
    with Viewer(store) as viewer:
        tmp = viewer._tmp
        assert os.path.isdir(tmp)
        for level, col, row in ((9, 1, 1), (8, 1, 0), (7, 0, 0), (3, 0, 0), (0, 0, 0)):
            kind, body = viewer.respond(f"/tile/{level}/{col}_{row}.png")
            assert kind == "image/png"
            expected = labels
            for _ in range(9 - level):
                expected = mode_2x2(expected)
            x0, y0, x1, y1 = viewer.tiler._box(level, col, row)
            np.testing.assert_array_equal(png(body), codebook[expected[y0:y1, x0:x1]])
        assert len(viewer.tiler.levels) == 3  # labels, and halvings to one 128² chunk
    assert not os.path.exists(tmp)


def test_highlight_keeps_one_colour_and_dims_the_rest(photo):
    _, store = photo
    opened = open_store(store)
    window = opened.labels[253:509, 253:509]
    with Viewer(store) as viewer:
        label = int(np.bincount(window.ravel()).argmax())
        shown = png(viewer.respond(f"/highlight/{label}/9/1_1.png")[1])
        colours = viewer.tiler.palette.colours
    np.testing.assert_array_equal(shown, dim(colours, label)[window][:, :, :3])
    assert (shown[window == label] == opened.codebook[label]).all()
    assert (shown[window != label] != opened.codebook[window[window != label]]).any()


def test_highlight_past_256_colours_renders_rgb_tiles_again(tmp_path, astronaut):
    """RGB tiles have no palette to swap: the highlighted tile is rendered with dimmed colours."""
    labels = (astronaut[:300, :500, 0].astype(np.uint16) * 300 // 256).astype(np.uint16)
    codebook = np.random.default_rng(0).integers(0, 256, (300, 3), dtype=np.uint8)
    partial = create_store(str(tmp_path / "many.zarr"), (64, 64), codebook,
                           made_up_meta(labels.shape, codebook))  # fmt: skip
    partial.labels[:] = labels
    finish_store(partial, partial.meta)
    label = int(labels[100, 100])
    with Viewer(tmp_path / "many.zarr") as viewer:
        plain = png(viewer.respond("/tile/9/0_0.png")[1])
        shown = png(viewer.respond(f"/highlight/{label}/9/0_0.png")[1])
        colours = viewer.tiler.palette.colours
    window = labels[:255, :255]
    np.testing.assert_array_equal(plain, codebook[window])
    np.testing.assert_array_equal(shown, dim(colours, label)[window][:, :, :3])
    assert (shown[window == label] == codebook[label]).all()


def test_source_tiles_and_pixels_are_read_from_the_source(photo, astronaut):
    """At full resolution a source tile is the source's pixels; a level down, the mean of each
    2 x 2 block; a pixel's label and source values come from the store and the file."""
    src, store = photo
    with Viewer(store) as viewer:
        info = viewer.info()
        assert info["source"] == {"path": str(src), "available": True, "note": "", "min_level": 0}
        np.testing.assert_array_equal(
            png(viewer.respond("/source/9/1_0.png")[1]), astronaut[0:255, 253:509]
        )
        down = astronaut[0:510, 506:512].astype(float).reshape(255, 2, 3, 2, 3).mean(axis=(1, 3))
        np.testing.assert_array_equal(
            png(viewer.respond("/source/8/1_0.png")[1])[:, :3], np.rint(down)
        )
        found = json.loads(viewer.respond("/pixel/300/200.json")[1])
    assert found == {"x": 300, "y": 200, "label": int(open_store(store).labels[200, 300]),
                     "source": astronaut[200, 300].tolist()}  # fmt: skip


def test_a_source_that_is_gone_is_said_so(tmp_path, astronaut):
    src = write_tiff(tmp_path / "a.tif", astronaut[:200, :300])
    bigquant.compress(src, tmp_path / "a.zarr", 8)
    src.rename(tmp_path / "moved.tif")
    with Viewer(tmp_path / "a.zarr") as viewer:
        source = viewer.info()["source"]
        assert source["available"] is False and source["note"] == f"the source {src} is gone"
        with pytest.raises(Exception, match="no source tile"):
            viewer.respond("/source/9/0_0.png")
    tifffile.imwrite(src, astronaut[:100, :300])  # another image at the same path
    source = Viewer(tmp_path / "a.zarr").info()["source"]
    assert source["available"] is False and "is now 100x300x3, not the 200x300x3" in source["note"]


def test_a_changed_source_of_the_same_shape_is_shown_and_said_so(tmp_path, astronaut):
    src = write_tiff(tmp_path / "a.tif", astronaut[:200, :300])
    bigquant.compress(src, tmp_path / "a.zarr", 8)
    write_tiff(src, astronaut[200:400, :300])  # the same shape, other pixels
    source = Viewer(tmp_path / "a.zarr").info()["source"]
    assert source["available"] is True
    assert source["note"] == f"the source {src} has changed since the store was made"


def test_an_unchanged_source_is_available_before_it_is_opened(tmp_path, astronaut):
    """info.json says the source is there from its recorded size and modification time,
    without opening it (its imports would slow the label levels); it opens when asked for."""
    src = write_tiff(tmp_path / "a.tif", astronaut[:200, :300])
    bigquant.compress(src, tmp_path / "a.zarr", 8)
    viewer = Viewer(tmp_path / "a.zarr")
    assert viewer.info()["source"] == {
        "path": str(src),
        "available": True,
        "note": "",
        "min_level": viewer._source_min_level(),
    }
    assert viewer._source_found is None  # not opened
    np.testing.assert_array_equal(
        png(viewer.respond(f"/source/{viewer.tiler.top}/0_0.png")[1]), astronaut[:200, :255]
    )


def test_pixel_shares_of_a_store_without_counts_are_counted(tmp_path, astronaut):
    """A store whose metadata records no counts: the viewer counts them in one pass."""
    labels = (astronaut[:300, :500].mean(axis=2) // 16).astype(np.uint8)
    codebook = np.array([[16 * i] * 3 for i in range(16)], np.uint8)
    partial = create_store(str(tmp_path / "s.zarr"), (64, 64), codebook,
                           made_up_meta(labels.shape, codebook))  # fmt: skip
    partial.labels[:] = labels
    finish_store(partial, partial.meta)
    assert open_store(tmp_path / "s.zarr").meta.counts is None
    with Viewer(tmp_path / "s.zarr") as viewer:
        viewer._thread.join()
        info = viewer.info()
    assert [p["count"] for p in info["palette"]] == np.bincount(
        labels.ravel(), minlength=16
    ).tolist()
    assert info["counts_from"] == "counted"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_view_command_prints_its_address_and_stops_on_ctrl_c(photo, stop, tmp_path):
    """A process of its own: the URL on stdout, served until SIGINT (or SIGTERM), then a
    clean stop: status 0, no error, and the levels it made removed."""
    _, store = photo
    temp = tmp_path / "temp"  # where the levels of a store without a pyramid are made
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigquant", "view", str(store), "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_a_terminal_gives_it, env={**os.environ, "TMPDIR": str(temp)},
    )  # fmt: skip
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        host, port = url[len("http://") : -1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/info.json")
        assert json.loads(conn.getresponse().read())["width"] == 512
        conn.close()
        assert [p.name[:14] for p in temp.iterdir()] == ["bigquant-view-"]
    finally:
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err.splitlines()[-1].startswith("bigquant: stopped serving")
    assert not [line for line in err.splitlines() if "Traceback" in line or "error" in line]
    assert not list(temp.iterdir())


# -- The page in a real browser ------------------------------------------------------------------

VIEW_W, VIEW_H = 700, 300  # the canvas: the viewport less the 280-pixel palette panel
LEFT, TOP = 100, 150  # the image pixel at the canvas's top-left at 1:1, across tile borders


def canvas_pixels(page) -> np.ndarray:
    page.wait_for_function("window.bigquant && window.bigquant.complete", timeout=30_000)
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return png(page.locator("#canvas").screenshot())


def test_the_page_shows_tiles_highlights_a_colour_and_shows_the_source(photo, astronaut, browser):
    _, store = photo
    opened = open_store(store)
    with serving(store) as server:
        # bypass_csp: the page forbids eval, which Playwright's wait_for_function uses.
        page = browser.new_page(
            viewport={"width": VIEW_W, "height": VIEW_H}, device_scale_factor=1, bypass_csp=True
        )
        try:
            page.goto(server.url)
            page.wait_for_function("window.bigquant && window.bigquant.complete", timeout=30_000)
            # The whole image fits at first.
            assert page.evaluate("window.bigquant.state.scale") < 1
            w, h = page.evaluate("[canvas.clientWidth, canvas.clientHeight]")
            assert page.locator("#palette li").count() == 16
            page.evaluate(f"window.bigquant.goto({LEFT} + {w} / 2, {TOP} + {h} / 2, 1)")
            shot = canvas_pixels(page)
            assert shot.shape == (h, w, 3) and w > 300
            labels = opened.labels[TOP : TOP + h, LEFT : LEFT + w]
            visible = labels.shape
            np.testing.assert_array_equal(shot[: visible[0], : visible[1]], opened.codebook[labels])

            label = int(np.bincount(labels.ravel()).argmax())
            page.locator(f'#palette li[data-label="{label}"]').click()
            page.wait_for_function("window.bigquant.state.highlight !== null")
            shot = canvas_pixels(page)
            colours = DeepZoom(opened).palette.colours
            np.testing.assert_array_equal(
                shot[: visible[0], : visible[1]], dim(colours, label)[labels][:, :, :3]
            )

            box = page.locator("#canvas").bounding_box()
            page.mouse.move(box["x"] + 10.5, box["y"] + 20.5)
            page.wait_for_function("document.getElementById('hover').dataset.label !== undefined")
            assert page.locator("#hover").get_attribute("data-label") == str(
                opened.labels[TOP + 20, LEFT + 10]
            )

            page.locator(f'#palette li[data-label="{label}"]').click()  # off again
            page.locator("#source").check()
            shot = canvas_pixels(page)
            np.testing.assert_array_equal(
                shot[: visible[0], : visible[1]], astronaut[TOP : TOP + h, LEFT : LEFT + w]
            )
            # The wheel zooms in about the pointer, a drag pans; the new view's tiles load.
            page.locator("#source").uncheck()
            before = page.evaluate("[window.bigquant.state.scale, window.bigquant.state.cx]")
            page.mouse.move(box["x"] + 200, box["y"] + 150)
            page.mouse.wheel(0, -400)
            page.wait_for_function(f"window.bigquant.state.scale > {before[0]} * 1.5")
            page.wait_for_function("window.bigquant.complete", timeout=30_000)  # zoom done
            before = page.evaluate("[window.bigquant.state.scale, window.bigquant.state.cx]")
            page.mouse.down()
            page.mouse.move(box["x"] + 100, box["y"] + 150, steps=5)
            page.mouse.up()
            after = page.evaluate("[window.bigquant.state.scale, window.bigquant.state.cx]")
            # Dragged 100 pixels left: the view moved 100 screen pixels right over the image.
            assert after[0] == before[0] and abs((after[1] - before[1]) * after[0] - 100) < 1e-6
            page.wait_for_function("window.bigquant.complete", timeout=30_000)
            page.screenshot(path=str(store.parent / "view.png"))
        finally:
            page.close()
    assert (store.parent / "view.png").stat().st_size > 10_000


def test_bad_input_is_one_line(tmp_path, photo, astronaut):
    """A missing store, tiles of another store, a port already taken: one line, exit 1."""
    from conftest import cli

    _, store = photo
    other = tmp_path / "other.zarr"
    bigquant.compress(astronaut[:64, :64], other, 4)
    write_tiles(other, tmp_path / "dz")
    with serving(store) as server:
        taken = server.server_address[1]
        for args, message in (
            (("view", tmp_path / "nothing.zarr"), "no such file or directory"),
            (("view", store, "--tiles", tmp_path / "dz.dzi"), f"tiles of {other}, not of"),
            (("view", store, "--tiles", tmp_path / "none.dzi"), "not a finished `bigquant tiles`"),
            (
                ("view", store, "--port", taken, "--no-browser"),
                f"cannot listen on 127.0.0.1:{taken}",
            ),
        ):
            result = cli(*args)
            assert result.returncode == 1, args
            assert result.stderr.startswith("bigquant: error: ") and message in result.stderr
            assert result.stderr.count("\n") == 1
