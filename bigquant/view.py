"""``bigquant view``: a local web page to pan and zoom over a store, beside its palette.

A small HTTP server on 127.0.0.1 serves the page (``bigquant/viewer/``: one
HTML file, one script, one style sheet; no library, nothing from the network)
and these, rendered on demand from the store and kept in a bounded cache::

    /info.json                      size, tile grid, palette and pixel shares, source status
    /tile/LEVEL/COL_ROW.png         a Deep Zoom tile of the quantized image (`bigquant.DeepZoom`)
    /highlight/LABEL/LEVEL/COL_ROW.png   the same tile, every other colour dimmed
    /source/LEVEL/COL_ROW.png       the same place in the source image, read on demand
    /pixel/X/Y.json                 the label (and source value) of one pixel

Every other path, however spelt (``..``, absolute, percent-encoded), is 404:
requests are matched whole against these patterns, never turned into a path;
so is a request naming another host than ``127.0.0.1:PORT`` or ``localhost:PORT``.
Tiles of a ``bigquant tiles`` output (``tiles=``) are read from its folder, a
file that resolves outside it (a symlink) refused.

A store without a label pyramid gets every third level of one in a temporary
folder, made in the background as the page opens (`bigquant.tiles.make_levels`: the
same 2x2 mode ``bigquant tiles`` uses); a coarse tile asked for before its level is
made waits for it. Nothing here reads the whole image in a request.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import http.server
import io
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import zlib
from importlib import resources
from xml.etree import ElementTree

import numpy as np

from . import defaults, location
from .errors import BigquantError
from .kernels.color import to_8bit
from .store import Store, open_store
from .tiles import MANIFEST, DeepZoom, make_levels

log = logging.getLogger("bigquant")

#: Bytes of PNG tiles kept in memory for the next request of the same tile.
CACHE_BYTES = 128 << 20
#: Most pixels of the source one source tile may read: past it the page asks to zoom in.
SOURCE_PIXELS = 2048 * 2048
#: Side of the source's chunks (rounded to its TIFF tiles) the viewer reads.
_SOURCE_CHUNK = 256
#: Most 2x2-mode halvings a tile may make of the finest label level made so far before it
#: waits for the next level (3: a 254-pixel tile reads at most 2032² labels).
_CASCADE = 3
#: Seconds a tile waits for the label level it needs before the server answers 503.
_LEVEL_WAIT = 120
#: The page's own files, by the only names that serve them.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
}
_ROUTES = [
    (re.compile(r"/tile/(\d{1,2})/(\d{1,7})_(\d{1,7})\.png"), "tile"),
    (re.compile(r"/highlight/(\d{1,5})/(\d{1,2})/(\d{1,7})_(\d{1,7})\.png"), "highlight"),
    (re.compile(r"/source/(\d{1,2})/(\d{1,7})_(\d{1,7})\.png"), "source"),
    (re.compile(r"/pixel/(\d{1,9})/(\d{1,9})\.json"), "pixel"),
]


class NotFound(Exception):
    """A request for something the viewer does not serve: answered 404."""


class Viewer:
    """What the page asks for, answered from a store: tiles, palette, source, pixels.

    Parameters
    ----------
    store : path-like, URL or Store
        The store to show (`open_store`; only its metadata is read here).
    tiles : path-like or URL, optional
        A ``bigquant tiles`` Deep Zoom output of this store (``OUT.dzi``, a local
        path or an ``s3://`` URL): its tiles are served from there, with its tile
        size and overlap; tiles it lacks are rendered.
    cache_bytes : int
        Bytes of rendered tiles kept in memory.

    Attributes
    ----------
    tiler : DeepZoom
        Renders the tiles (libvips' defaults, 254 + 1, unless ``tiles`` says otherwise).

    Raises
    ------
    BigquantError
        For a store that is not one, or tiles that are not this store's.

    Notes
    -----
    `start` makes the label levels a store without a pyramid lacks (one pass
    over its labels, in the background); `close` stops that and removes them.

    Examples
    --------
    >>> with Viewer("scan.zarr") as viewer:  # doctest: +SKIP
    ...     png = viewer.respond("/tile/0/0_0.png")[1]
    """

    def __init__(self, store, *, tiles=None, cache_bytes: int = CACHE_BYTES):
        self.store = store if isinstance(store, Store) else open_store(store)
        self.root, tile_size, overlap = None, defaults.TILE_SIZE, defaults.TILE_OVERLAP
        if tiles is not None:
            self.root, tile_size, overlap = _tile_set(tiles, self.store)
        self.tiler = DeepZoom(self.store, tile_size, overlap)
        self.counts = self.store.meta.counts
        self._source_lock, self._source_found = threading.Lock(), None
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cache_bytes, self._cache_limit = 0, cache_bytes
        self._lock = threading.Lock()
        self._levels_made = threading.Condition()
        self._making = False
        self._stop = threading.Event()
        self._tmp: str | None = None
        self._thread: threading.Thread | None = None

    def _opened_source(self) -> tuple:
        with self._source_lock:
            if self._source_found is None:
                self._source_found = _open_source(self.store)
            return self._source_found

    @property
    def source(self):
        """The source image, opened lazily (on first use), or None where it is not there.

        Examples
        --------
        >>> Viewer("scan.zarr").source.data.shape  # doctest: +SKIP
        (31744, 31744, 3)
        """
        return self._opened_source()[0]

    @property
    def source_note(self) -> str:
        """Why there is no source to show, or how it differs; empty when there is nothing to say.

        Examples
        --------
        >>> Viewer("scan.zarr").source_note  # doctest: +SKIP
        'the source /data/scan.tif is gone'
        """
        return self._opened_source()[1]

    def __enter__(self) -> Viewer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Viewer:
        """Begin making what the store lacks (label levels, pixel counts) in the background.

        The source is opened by the first request that needs it (its imports take
        over half a second of Python, which the first screen would wait for).

        Returns
        -------
        Viewer
            Itself.

        Examples
        --------
        >>> viewer = Viewer("scan.zarr").start()  # doctest: +SKIP
        >>> viewer.close()  # doctest: +SKIP
        """
        labels = self.tiler.levels[0].labels
        lacks_levels = labels.shape[0] > labels.chunks[0] or labels.shape[1] > labels.chunks[1]
        lacks_levels = lacks_levels and len(self.tiler.levels) == 1
        if lacks_levels or self.counts is None:
            self._making = lacks_levels
            self._tmp = tempfile.mkdtemp(prefix="bigquant-view-")
            self._thread = threading.Thread(
                target=self._make, args=(lacks_levels,), name="bigquant-view-levels", daemon=True
            )
            self._thread.start()
        return self

    def _make(self, levels: bool) -> None:
        try:
            if levels:
                log.info("making the label levels %s lacks (2x2 mode)", self.store.path)
                # Stopped, the tasks not yet started write nothing: Ctrl-C waits for the
                # tasks running, not for a whole level.
                labels = self.tiler.levels[0].labels
                # Every `_CASCADE`-th level, each in one pass over the one before: a tile
                # is never more halvings than that below one, and the first screen waits
                # for one read of the labels, not one a level.
                made = make_levels(labels, self._tmp, self.store, stop=self._stop, step=_CASCADE)
                for n, level in made:
                    with self._levels_made:
                        self.tiler.add_level(n, level)
                        self._levels_made.notify_all()
            if self.counts is None and not self._stop.is_set():
                self.counts = _count(self.store)
        except Exception as exc:  # the page still shows what the levels made so far allow
            log.warning("%s: %s", self.store.path, exc)
        finally:
            with self._levels_made:
                self._making = False
                self._levels_made.notify_all()

    def close(self) -> None:
        """Stop making levels (after the tasks running) and remove them.

        Examples
        --------
        >>> viewer = Viewer("scan.zarr").start()  # doctest: +SKIP
        >>> viewer.close()  # doctest: +SKIP
        """
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join()
        finally:  # a second Ctrl-C while the running tasks finish still removes the levels
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def info(self) -> dict:
        """What the page needs to know: the image, the tile grid, the palette, the source.

        Returns
        -------
        dict
            JSON-ready: ``width``, ``height``, ``tile_size``, ``overlap``, ``top``
            (the full-resolution level), ``palette`` (per label: ``label``,
            ``hex``, ``alpha``, ``count``, ``nodata``), ``source`` (``path``,
            ``available``, ``note``, ``min_level``: the coarsest level it is
            shown at) and the store's path.

        Examples
        --------
        >>> Viewer("scan.zarr").info()["palette"][0]  # doctest: +SKIP
        {'label': 0, 'hex': '#020001', 'alpha': 255, 'count': 108012345, 'nodata': False}
        """
        t = self.tiler
        colours = t.palette.colours[: len(self.store.codebook)]
        counts = self.counts or [None] * len(colours)
        palette = [
            {
                "label": i,
                "hex": "#{:02x}{:02x}{:02x}".format(*c[:3]),
                "alpha": int(c[3]),
                "count": counts[i],
                "nodata": i == self.store.meta.nodata_label,
            }
            for i, c in enumerate(colours)
        ]
        if self._source_found is None and _source_unchanged(self.store):
            available, note = True, ""  # said without opening it: it opens as it did
        else:
            available, note = self.source is not None, self.source_note
        return {
            "store": self.store.path,
            "width": t.width,
            "height": t.height,
            "tile_size": t.tile_size,
            "overlap": t.overlap,
            "top": t.top,
            "palette": palette,
            "counts_from": "store" if self.store.meta.counts is not None else "counted",
            "source": {
                "path": self.store.meta.source.path,
                "available": available,
                "note": note,
                "min_level": self._source_min_level(),
            },
        }

    def _source_min_level(self) -> int:
        """The coarsest level whose source tiles read at most `SOURCE_PIXELS` of the source."""
        t = self.tiler
        for level in range(t.top + 1):
            side = t.tile_size + 2 * t.overlap
            f = 2 ** (t.top - level)
            if min(side * f, t.width) * min(side * f, t.height) <= SOURCE_PIXELS:
                return level
        return t.top

    def respond(self, path: str) -> tuple[str, bytes]:
        """The content type and body answering a request for ``path`` (its query ignored).

        Parameters
        ----------
        path : str
            The request's path as sent, percent-encoding and all.

        Returns
        -------
        tuple of (str, bytes)
            The content type and the body.

        Raises
        ------
        NotFound
            For every path that is not one of the page's files or routes, or names a
            tile, level, label or pixel the image does not have.
        BigquantError
            For a tile whose label level is still being made after two minutes.

        Examples
        --------
        >>> with Viewer("scan.zarr") as viewer:  # doctest: +SKIP
        ...     viewer.respond("/pixel/10/20.json")
        ('application/json', b'{"x": 10, "y": 20, "label": 17, "source": [12, 40, 33]}')
        """
        path = path.split("?", 1)[0]
        if path in STATIC:
            name, kind = STATIC[path]
            return kind, resources.files("bigquant").joinpath("viewer", name).read_bytes()
        if path == "/info.json":
            return "application/json", json.dumps(self.info()).encode()
        for pattern, route in _ROUTES:
            match = pattern.fullmatch(path)
            if match:
                numbers = [int(g) for g in match.groups()]
                return getattr(self, f"_{route}")(*numbers)
        raise NotFound(path)

    def _check_tile(self, level: int, col: int, row: int) -> None:
        if level > self.tiler.top:
            raise NotFound(f"level {level}")
        cols, rows = self.tiler.grid(level)
        if col >= cols or row >= rows:
            raise NotFound(f"tile {col}_{row}")

    def _tile(self, level: int, col: int, row: int) -> tuple[str, bytes]:
        self._check_tile(level, col, row)
        key = f"{level}/{col}_{row}"
        with self._lock:
            png = self._cache.get(key)
            if png is not None:
                self._cache.move_to_end(key)
                return "image/png", png
        png = self._from_disk(level, col, row)
        if png is None:
            self._wait_for_level(level)
            png = self.tiler.tile(level, col, row)
        self._keep(key, png)
        return "image/png", png

    def _from_disk(self, level: int, col: int, row: int) -> bytes | None:
        """The tile as ``bigquant tiles`` wrote it, or None where there is none (inside root)."""
        if self.root is None:
            return None
        if location.is_url(self.root):  # an object store: names only, nothing links out
            return location.read_bytes(f"{self.root}/{self.tiler.path(level, col, row)}")
        path = os.path.join(self.root, self.tiler.path(level, col, row))
        real = os.path.realpath(path)
        if os.path.commonpath([real, os.path.realpath(self.root)]) != os.path.realpath(self.root):
            raise NotFound(f"{path} leads out of the tiles' folder")
        try:
            with open(real, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _keep(self, key: str, png: bytes) -> None:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = png
                self._cache_bytes += len(png)
            while self._cache_bytes > self._cache_limit and self._cache:
                self._cache_bytes -= len(self._cache.popitem(last=False)[1])

    def _wait_for_level(self, level: int) -> None:
        """Wait until the finest label level made so far is few enough halvings from ``level``."""
        halvings = self.tiler.top - level
        with self._levels_made:
            done = self._levels_made.wait_for(
                lambda: not self._making or len(self.tiler.levels) - 1 + _CASCADE >= halvings,
                timeout=_LEVEL_WAIT,
            )
        if not done:
            raise BigquantError(f"level {level} is still being made")

    def _highlight(self, label: int, level: int, col: int, row: int) -> tuple[str, bytes]:
        """The tile with every colour but ``label``'s dimmed: the same pixels, another palette."""
        colours = self.tiler.palette.colours
        if label >= len(self.store.codebook):
            raise NotFound(f"label {label}")
        dimmed = dim(colours, label)
        _, png = self._tile(level, col, row)
        if self.tiler.palette.indexed and png[:8] == b"\x89PNG\r\n\x1a\n":
            swapped = _swap_palette(png, dimmed[: self.tiler.palette.indexed, :3].tobytes())
            if swapped is not None:
                return "image/png", swapped
        # An RGB tile (more than 256 colours): rendered again with the dimmed colours.
        other = copy.copy(self.tiler)
        other.palette = dataclasses.replace(self.tiler.palette, colours=dimmed, indexed=0)
        return "image/png", other.tile(level, col, row)

    def _source(self, level: int, col: int, row: int) -> tuple[str, bytes]:
        self._check_tile(level, col, row)
        if self.source is None or level < self._source_min_level():
            raise NotFound("no source tile")
        from PIL import Image

        t = self.tiler
        f = 2 ** (t.top - level)
        x0, y0, x1, y1 = t._box(level, col, row)
        window = self.source.data[y0 * f : min(y1 * f, t.height), x0 * f : min(x1 * f, t.width)]
        pixels = window.compute(scheduler="synchronous")
        if f > 1:
            pixels = _block_means(pixels, f)
        values = to_8bit(pixels, self.source.data.dtype, self.store.meta.source.peak)
        channels = values.shape[2]
        if channels <= 2:
            values = values[:, :, 0] if channels == 1 else values[:, :, [0, 0, 0, 1]]
        elif channels > 4:
            values = values[:, :, :3]
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(values)).save(buffer, format="PNG")
        return "image/png", buffer.getvalue()

    def _pixel(self, x: int, y: int) -> tuple[str, bytes]:
        """The label of pixel ``(x, y)`` at full resolution, and the source's values there."""
        t = self.tiler
        if x >= t.width or y >= t.height:
            raise NotFound(f"pixel {x}, {y}")
        label = int(t.levels[0][y : y + 1, x : x + 1][0, 0])
        found = {"x": x, "y": y, "label": label}
        if self.source is not None:
            value = self.source.data[y, x].compute(scheduler="synchronous")
            found["source"] = [v if np.isfinite(v) else None for v in value.tolist()]
        return "application/json", json.dumps(found).encode()


def dim(colours: np.ndarray, keep: int) -> np.ndarray:
    """``colours`` (RGBA rows) with every row but ``keep`` dimmed to a faint grey.

    What a highlighted tile shows: the kept colour as it is, every other a
    quarter of its grey level over a light wash behind a dark kept colour, or
    over black behind a light one, so the kept colour stands out whatever it is.
    """
    grey = colours[:, :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    base = 176 if grey[keep] < 128 else 0
    out = colours.copy()
    out[:, :3] = np.rint(base + grey / 4)[:, None].astype(np.uint8)
    out[keep] = colours[keep]
    return out


def _swap_palette(png: bytes, plte: bytes) -> bytes | None:
    """``png`` with its PLTE chunk's body replaced by ``plte``; None when it has none that long."""
    i = 8
    while i + 8 <= len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        kind = png[i + 4 : i + 8]
        if kind == b"PLTE":
            if n != len(plte):
                return None
            crc = struct.pack(">I", zlib.crc32(kind + plte))
            return png[: i + 8] + plte + crc + png[i + 12 + n :]
        if kind == b"IDAT":
            return None
        i += 12 + n
    return None


def _block_means(pixels: np.ndarray, f: int) -> np.ndarray:
    """The mean of every ``f x f`` block of ``(y, x, c)`` pixels (partial edge blocks: theirs)."""
    h, w = pixels.shape[:2]
    rows, cols = np.arange(0, h, f), np.arange(0, w, f)
    # Summed in their own kind, rows first: no float copy of the whole window.
    acc = np.float64 if pixels.dtype.kind == "f" else np.int64
    sums = np.add.reduceat(np.add.reduceat(pixels, rows, 0, dtype=acc), cols, 1, dtype=acc)
    n = np.outer(np.minimum(f, h - rows), np.minimum(f, w - cols))[:, :, None]
    return sums / n


def _count(store: Store) -> list[int]:
    """Pixels per label, counted over the whole store chunk by chunk (one pass)."""
    import dask.array as da

    labels = store.labels_dask()
    n = len(store.codebook)
    per_chunk = labels.map_blocks(
        lambda block: np.bincount(block.ravel(), minlength=n)[None, None, :n],
        new_axis=2,
        chunks=((1,) * len(labels.chunks[0]), (1,) * len(labels.chunks[1]), (n,)),
        dtype=np.int64,
    )
    return [int(v) for v in da.sum(per_chunk, axis=(0, 1)).compute()]


def _source_unchanged(store: Store) -> bool:
    """Whether the store's source file is there with the size and modification time the run
    recorded, found without opening it."""
    path = store.meta.source.path
    return path is not None and location.exists(path) and _source_changed(store, path) is False


def _source_changed(store: Store, path: str) -> bool | None:
    """Whether the file ``path``, which is there, differs in size or modification time from
    the source the run recorded; None where the run recorded none."""
    recorded = store.meta.run.get("source") or {}
    if not recorded:
        return None
    seen = location.identity(path)
    return (recorded.get("size"), recorded.get("mtime")) != (seen["size"], seen["mtime"])


def _open_source(store: Store):
    """The store's source, opened lazily, and a note: why it is not shown, or how it changed."""
    from .read import open_image

    path = store.meta.source.path
    if path is None:
        return None, "the store was made from an array in memory: there is no source file"
    if not location.exists(path):
        return None, f"the source {path} is gone"
    try:
        # Small chunks (whole TIFF tiles): a source tile decodes only the tiles under it.
        image = open_image(path, chunks=_SOURCE_CHUNK)
    except BigquantError as exc:
        return None, f"the source cannot be read: {exc}"
    if tuple(image.data.shape) != tuple(store.meta.source.shape):
        return None, (
            f"the source {path} is now {'x'.join(map(str, image.data.shape))}, "
            f"not the {'x'.join(map(str, store.meta.source.shape))} the store was made from"
        )
    if _source_changed(store, path):
        return image, f"the source {path} has changed since the store was made"
    return image, ""


def _tile_set(tiles, store: Store) -> tuple[str, int, int]:
    """The tiles' folder, tile size and overlap of a ``bigquant tiles`` Deep Zoom output of
    ``store``; a `BigquantError` for one of another store or options."""
    out = location.normalize(tiles).removesuffix(".dzi")
    dzi, root = f"{out}.dzi", f"{out}_files"
    try:
        image = ElementTree.fromstring(location.read_bytes(dzi))
        manifest = json.loads(location.read_bytes(f"{root}/{MANIFEST}"))
        tile_size, overlap = int(image.get("TileSize")), int(image.get("Overlap"))
    except (OSError, ValueError, TypeError, ElementTree.ParseError):
        raise BigquantError(f"{dzi}: not a finished `bigquant tiles` Deep Zoom output") from None
    if manifest.get("store") != store.path or manifest.get("shape") != list(store.labels.shape):
        raise BigquantError(f"{dzi}: tiles of {manifest.get('store')}, not of {store.path}")
    return root, tile_size, overlap


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers GET and HEAD from the server's `Viewer`; logs requests only at -vv."""

    server_version = "bigquant-view"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        port = self.server.server_address[1]
        try:
            # Only requests addressed to this server by name: a page of another site that
            # points its own name at 127.0.0.1 (DNS rebinding) is refused.
            if self.headers.get("Host") not in (f"127.0.0.1:{port}", f"localhost:{port}"):
                raise NotFound(self.headers.get("Host"))
            kind, data = self.server.viewer.respond(self.path)
            status = 200
        except NotFound:
            kind, data, status = "text/plain; charset=utf-8", b"not found\n", 404
        except BigquantError as exc:
            kind, data, status = "text/plain; charset=utf-8", f"{exc}\n".encode(), 503
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header(
            "Cache-Control", "no-store" if kind.startswith("application") else "max-age=60"
        )
        self.send_header("X-Content-Type-Options", "nosniff")
        # The page runs only its own script and loads only from this server.
        self.send_header("Content-Security-Policy", "default-src 'self'")
        self.end_headers()
        if body:
            with contextlib.suppress(ConnectionError):
                self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class Server(http.server.ThreadingHTTPServer):
    """The viewer's HTTP server, bound to 127.0.0.1 (port 0: a free one).

    Parameters
    ----------
    viewer : Viewer
        Answers the requests.
    port : int
        The port, or 0 for one the system picks.
    """

    daemon_threads = True

    def __init__(self, viewer: Viewer, port: int = 0):
        self.viewer = viewer
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/``."""
        return f"http://127.0.0.1:{self.server_address[1]}/"


def view_store(store, *, port: int = 0, tiles=None, open_browser: bool = False, ready=None) -> None:
    """Serve the viewer of ``store`` on 127.0.0.1 until interrupted (Ctrl-C).

    Parameters
    ----------
    store : path-like, URL or Store
        The store to show.
    port : int
        The port to listen on; 0 picks a free one.
    tiles : path-like or URL, optional
        A ``bigquant tiles`` Deep Zoom output of the store to serve tiles from (a local
        path or an ``s3://`` URL).
    open_browser : bool
        Open the page in the default web browser.
    ready : callable, optional
        Called with the page's URL once the server listens.

    Raises
    ------
    BigquantError
        A store that is not one, tiles of another, or a port that is taken.
    KeyboardInterrupt
        On Ctrl-C (or SIGTERM, in the command), after the server has stopped and the
        levels it made are removed.

    Examples
    --------
    >>> import bigquant
    >>> bigquant.view_store("scan.zarr", port=8800, ready=print)  # doctest: +SKIP
    http://127.0.0.1:8800/
    """
    viewer = Viewer(store, tiles=tiles)
    try:
        server = Server(viewer, port)
    except OSError as exc:
        raise BigquantError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None
    # Listening first: a port that is taken fails before any work starts.
    with server, viewer:
        if ready is not None:
            ready(server.url)
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        server.serve_forever()
