"""Web tiles of a store: a Deep Zoom or XYZ pyramid of PNG tiles, all with the store's palette.

Tiles are cut from the labels, not from colours: every tile is an indexed PNG
whose colour table is the codebook (the same bytes in every tile, the nodata
label a transparent entry), so every pixel is exactly ``codebook[label]`` and
neighbouring tiles cannot disagree. Lower levels are the store's own label
pyramid (`bigquant.pyramid`, a 2x2 mode) where it has one, else the same
rule applied to the labels. More than 256 colours do not fit a PNG palette:
such stores give RGB(A) tiles.

Layouts::

    deepzoom   OUT.dzi + OUT_files/LEVEL/COL_ROW.png   (OpenSeadragon, libvips dzsave)
    xyz        OUT/Z/X/Y.png, 256-pixel tiles           (Leaflet L.CRS.Simple, OpenLayers)

Deep Zoom level ``L`` of a ``w x h`` image is ``ceil(w / 2**(top - L)) x
ceil(h / 2**(top - L))`` with ``top = ceil(log2(max(w, h)))``; XYZ zoom
``z`` is the same with ``top`` the first zoom whose one tile holds the image.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import posixpath
import uuid
from dataclasses import dataclass

import numpy as np

from . import defaults, location
from .errors import BigquantError, ParameterError
from .kernels import png
from .kernels.color import to_8bit
from .kernels.downsample import mode_2x2
from .kernels.nearest import check_labels
from .output import Output
from .pyramid import halve
from .store import LABELS_KEY, LabelArray, Store, codebook_json, open_store

log = logging.getLogger("bigquant")

#: Where a run records what it writes, beside the tiles: a rerun with the same store and
#: options finishes the tiles an interrupted run left out, and refuses to mix in others.
MANIFEST = ".bigquant-tiles.json"
#: The end of a file's name while it is written.
_PART = ".part"
#: Most label pixels one task reads at once (uint16 labels: 16 MiB): blocks small enough that
#: the last few leave no thread idle for long (encoding, not reading, takes the time).
_TASK_PIXELS = 8 << 20


@dataclass(frozen=True)
class _Palette:
    """The 8-bit colours of a store's labels, and which tiles are indexed PNGs.

    ``colours`` holds an RGBA row per label, then, for padding with no nodata
    label to use, a transparent row of its own. Its first ``indexed`` rows are
    the palette (PLTE, and tRNS unless all are opaque) of every indexed tile;
    0 when the labels do not fit a palette. ``pad`` is the label that fills the
    part of an edge tile past the image, or None when tiles are not padded.
    """

    colours: np.ndarray
    indexed: int
    pad: int | None


def _palette(store: Store, pad: bool) -> _Palette:
    """The PNG colours of ``store``'s codebook; with ``pad``, a transparent label for padding.

    A 256-colour codebook with no nodata label has no room for the padding's
    entry: its padded edge tiles are RGBA, every other tile indexed.
    """
    codebook, nodata = store.codebook, store.meta.nodata_label
    n, channels = codebook.shape
    if channels not in (1, 2, 3, 4):
        raise BigquantError(
            f"{store.path}: PNG tiles need 1 to 4 channels, the store has {channels}"
        )
    values = to_8bit(codebook, codebook.dtype, store.meta.source.peak)
    rgb = np.repeat(values[:, :1], 3, axis=1) if channels <= 2 else values[:, :3]
    alpha = values[:, -1:].copy() if channels in (2, 4) else np.full((n, 1), 255, np.uint8)
    if nodata is not None:
        alpha[nodata] = 0
    colours, pad_label = np.hstack([rgb, alpha]), None
    if pad:
        pad_label = nodata
        if pad_label is None:
            # A colour of its own past the codebook, so padding is never mistaken for a colour.
            colours, pad_label = np.vstack([colours, np.zeros((1, 4), np.uint8)]), n
    indexed = len(colours) if len(colours) <= 256 else n if n <= 256 else 0
    return _Palette(colours, indexed, pad_label)


class DeepZoom:
    """Deep Zoom tiles of a store, each rendered on its own from the label window it needs.

    Parameters
    ----------
    store : path-like, URL or Store
        The store to cut tiles from (`open_store` opens a path; only its
        metadata is read here).
    tile_size : int
        Side of a tile without its overlap, at least 1.
    overlap : int
        Pixels each tile repeats of its neighbours on every side that has one, at least 0.
    levels : list of LabelArray, optional
        Label arrays level 0 first, each the 2x2 mode of the one before
        (`Store.levels`, the default, reads the store's own), None where one is
        missing; a level past the last, or missing, is made from the nearest one
        above it by `bigquant.kernels.downsample.mode_2x2`.

    Attributes
    ----------
    width, height : int
        The image's size at full resolution.
    top : int
        The full-resolution level: ``ceil(log2(max(width, height)))``.

    Raises
    ------
    BigquantError
        For a store that is not one, or whose codebook no PNG can show.

    Notes
    -----
    A tile ``k`` levels below the last stored level reads ``4**k`` labels per
    pixel it shows. Of a store without a pyramid the coarse levels thus read
    much of the image: a viewer serving tiles on demand should pass ``levels``
    (`write_tiles` makes them in a temporary group; `bigquant.pyramid.write_pyramid`
    into the store).

    Examples
    --------
    >>> dz = DeepZoom("scan.zarr")  # doctest: +SKIP
    >>> png = dz.tile(dz.top, 0, 0)  # the top-left tile at full resolution  # doctest: +SKIP
    """

    #: Pad edge tiles to the full tile size (XYZ viewers stretch whatever they get to it).
    _pad = False

    def __init__(
        self,
        store,
        tile_size: int = defaults.TILE_SIZE,
        overlap: int = defaults.TILE_OVERLAP,
        *,
        levels: list | None = None,
    ):
        if tile_size < 1:
            raise ParameterError(f"`tile_size` must be at least 1, not {tile_size}")
        if overlap < 0:
            raise ParameterError(f"`overlap` must be at least 0, not {overlap}")
        self.store = store if isinstance(store, Store) else open_store(store)
        self.tile_size, self.overlap = tile_size, overlap
        self.height, self.width = self.store.labels.shape
        self.levels = list(levels or self.store.levels())  # `add_level` extends it
        self.palette = _palette(self.store, self._pad)
        self.top = self._top()

    def _top(self) -> int:
        return math.ceil(math.log2(max(self.width, self.height, 1)))

    def _halvings(self, level: int) -> int:
        """How many times ``level`` halves the full-resolution image."""
        if not 0 <= level <= self.top:
            raise ParameterError(f"`level` must be 0 to {self.top}, not {level}")
        return self.top - level

    def size(self, level: int) -> tuple[int, int]:
        """The size of the image at ``level``; reads nothing.

        Parameters
        ----------
        level : int
            0 (one pixel) to `top` (full resolution).

        Returns
        -------
        tuple of int
            ``(width, height)``: the full size halved ``top - level`` times, rounded up.

        Raises
        ------
        ParameterError
            For a level the pyramid does not have.

        Examples
        --------
        >>> dz = DeepZoom("scan.zarr")  # doctest: +SKIP
        >>> dz.size(dz.top) == (dz.width, dz.height)  # doctest: +SKIP
        True
        """
        f = 2 ** self._halvings(level)
        return -(-self.width // f), -(-self.height // f)

    def grid(self, level: int) -> tuple[int, int]:
        """How many tiles ``level`` has across and down; reads nothing.

        Parameters
        ----------
        level : int
            0 (one pixel) to `top` (full resolution).

        Returns
        -------
        tuple of int
            ``(columns, rows)``.

        Raises
        ------
        ParameterError
            For a level the pyramid does not have.

        Examples
        --------
        >>> DeepZoom("scan.zarr").grid(0)  # doctest: +SKIP
        (1, 1)
        """
        w, h = self.size(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def _box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the pixels of ``level`` tile ``(col, row)`` holds, overlap included."""
        w, h = self.size(level)
        cols, rows = self.grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise ParameterError(f"level {level} has no tile ({col}, {row})")
        t, o = self.tile_size, self.overlap
        x0, y0 = max(col * t - o, 0), max(row * t - o, 0)
        return x0, y0, min((col + 1) * t + o, w), min((row + 1) * t + o, h)

    def add_level(self, halvings: int, labels) -> None:
        """Add a label level made since (`make_levels`); the levels between stay missing.

        Parameters
        ----------
        halvings : int
            How many times the level halves the full-resolution labels.
        labels : LabelArray
            The level's labels.

        Examples
        --------
        >>> dz = DeepZoom("scan.zarr")  # doctest: +SKIP
        >>> for n, level in make_levels(dz.levels[0].labels, "tmp", dz.store, step=3):  # doctest: +SKIP
        ...     dz.add_level(n, level)
        """
        self.levels += [None] * (halvings - len(self.levels)) + [labels]

    def nearest_level(self, halvings: int) -> int:
        """The label level at hand nearest above ``halvings`` halvings; reads nothing.

        Parameters
        ----------
        halvings : int
            How many times the labels wanted halve the full-resolution ones.

        Returns
        -------
        int
            The most halvings, up to ``halvings``, of a level in `levels`.

        Examples
        --------
        >>> DeepZoom("scan.zarr").nearest_level(5)  # a store without a pyramid  # doctest: +SKIP
        0
        """
        j = min(halvings, len(self.levels) - 1)
        while self.levels[j] is None:
            j -= 1
        return j

    def _window(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The labels of pixels ``[y0:y1, x0:x1]`` of ``level``, read from the nearest stored level.

        A level not at hand is the 2x2 mode of the nearest one above it, applied as
        often as it takes, to a window whose corners fall on whole cells: the same
        labels as halving the whole level, for a window's worth of reading.
        """
        k = self._halvings(level)
        j = self.nearest_level(k)
        s = 2 ** (k - j)
        h, w = self.levels[j].shape
        labels = self.levels[j][y0 * s : min(y1 * s, h), x0 * s : min(x1 * s, w)]
        for _ in range(k - j):
            labels = mode_2x2(labels)
        return check_labels(labels, len(self.store.codebook))

    def tile(self, level: int, col: int, row: int) -> bytes:
        """The PNG of one tile, reading only the labels it shows.

        Parameters
        ----------
        level : int
            0 (one pixel) to `top` (full resolution).
        col, row : int
            The tile's column and row, from the top-left; `grid` gives how many.

        Returns
        -------
        bytes
            An indexed PNG with the codebook as palette (RGB or RGBA past 256 colours).

        Raises
        ------
        ParameterError
            For a level or tile the pyramid does not have.
        BigquantError
            For labels that cannot be read, or that point past the codebook.

        Examples
        --------
        >>> DeepZoom("scan.zarr").tile(0, 0, 0)[:4]  # doctest: +SKIP
        b'\\x89PNG'
        """
        return self._encode(self._window(level, *self._box(level, col, row)))

    def _encode(self, labels: np.ndarray) -> bytes:
        """PNG bytes of a label window: indexed with the codebook as palette, or RGB(A) past 256."""
        p = self.palette
        if self._pad and labels.shape != (self.tile_size, self.tile_size):
            dtype = np.promote_types(labels.dtype, np.min_scalar_type(p.pad))
            full = np.full((self.tile_size, self.tile_size), p.pad, dtype)
            full[: labels.shape[0], : labels.shape[1]] = labels
            labels = full
        if p.indexed and int(labels.max(initial=0)) < p.indexed:
            return png.encode(labels.astype(np.uint8, copy=False), p.colours[: p.indexed])
        opaque = (p.colours[:, 3] == 255).all()
        return png.encode(p.colours[labels][..., :3] if opaque else p.colours[labels])

    def path(self, level: int, col: int, row: int) -> str:
        """Where a tile goes, relative to the tiles' folder.

        Parameters
        ----------
        level : int
            The tile's level (its zoom, for `XYZ`).
        col, row : int
            The tile's column and row, from the top-left.

        Returns
        -------
        str
            ``LEVEL/COL_ROW.png`` (Deep Zoom, under ``OUT_files``) or ``Z/X/Y.png`` (XYZ).

        Examples
        --------
        >>> DeepZoom("scan.zarr").path(12, 3, 4)  # doctest: +SKIP
        '12/3_4.png'
        """
        return f"{level}/{col}_{row}.png"

    def dzi(self) -> str:
        """The ``.dzi`` XML describing the pyramid, as OpenSeadragon reads it; reads nothing.

        Returns
        -------
        str
            The XML: format ``png``, the overlap, the tile size and the full image size.

        Examples
        --------
        >>> print(DeepZoom("scan.zarr").dzi())  # doctest: +SKIP
        <?xml version="1.0" encoding="UTF-8"?>
        ...
        """
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="png" '
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}">\n'
            f'  <Size Width="{self.width}" Height="{self.height}"/>\n'
            "</Image>\n"
        )


class XYZ(DeepZoom):
    """XYZ (``z/x/y``) tiles for map viewers: 256-pixel tiles without overlap, zoom 0 one tile.

    Zoom ``z`` is Deep Zoom level ``z + (ceil(log2(max(w, h))) - top)``: the
    full resolution is zoom ``top``, the first whose single tile would hold the
    image. Edge tiles are padded to the full size with a transparent colour:
    the nodata label, else an entry after the codebook; a 256-colour codebook
    without nodata has no room for it, so its padded tiles are RGBA.

    Parameters
    ----------
    store : path-like, URL or Store
        The store to cut tiles from (`open_store` opens a path; only its
        metadata is read here).
    levels : list of zarr.Array, optional
        As for `DeepZoom`.

    Raises
    ------
    BigquantError
        For a store that is not one, or whose codebook no PNG can show.

    Examples
    --------
    >>> xyz = XYZ("scan.zarr")  # doctest: +SKIP
    >>> png = xyz.tile(0, 0, 0)  # the whole image in one tile  # doctest: +SKIP
    """

    _pad = True

    def __init__(self, store, *, levels: list | None = None):
        super().__init__(store, defaults.XYZ_TILE_SIZE, 0, levels=levels)

    def _top(self) -> int:
        return max(0, math.ceil(math.log2(max(self.width, self.height, 1) / self.tile_size)))

    def path(self, level: int, col: int, row: int) -> str:
        """Where a tile goes, relative to the tiles' folder.

        Parameters
        ----------
        level : int
            The tile's zoom.
        col, row : int
            The tile's x and y, from the top-left.

        Returns
        -------
        str
            ``Z/X/Y.png``.

        Examples
        --------
        >>> XYZ("scan.zarr").path(2, 3, 1)  # doctest: +SKIP
        '2/3/1.png'
        """
        return f"{level}/{col}/{row}.png"


def _write_file(data: bytes | str, path: str) -> None:
    """Write ``path`` whole or not at all: locally under a temporary name, renamed once
    written, in a folder made if need be; to an object store in one put (an object appears
    only once it is whole, and folders are only names)."""
    data = data.encode() if isinstance(data, str) else data
    if location.is_url(path):
        fs, where = location.filesystem(path)
        fs.pipe_file(where, data)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)  # a level's, XYZ's column's
    tmp = f"{path}.{os.getpid()}{_PART}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _holds_files(folder: str) -> bool:
    """Whether the folder (or object-store prefix) ``folder`` holds anything."""
    if location.is_url(folder):
        return location.isdir(folder)
    return os.path.isdir(folder) and bool(os.listdir(folder))


def _inside(a: str, b: str) -> bool:
    """Whether location ``a`` is ``b`` or under it (paths and URLs alike)."""
    return a == b or a.startswith(b.rstrip("/") + "/")


def _write_block(tiler: DeepZoom, root: str, level: int, tiles: list[tuple[int, int]]) -> int:
    """Write ``tiles`` (``(col, row)`` of ``level``, one block) from one read of their labels."""
    boxes = [tiler._box(level, c, r) for c, r in tiles]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    labels = tiler._window(level, x0, y0, x1, y1)
    for (c, r), (a, b, e, f) in zip(tiles, boxes, strict=True):
        png = tiler._encode(labels[b - y0 : f - y0, a - x0 : e - x0])
        _write_file(png, f"{root}/{tiler.path(level, c, r)}")
    return len(tiles)


def _missing(tiler: DeepZoom, root: str, level: int) -> list[list[tuple[int, int]]]:
    """Tiles of ``level`` not yet under ``root``, grouped in blocks of about one read each."""
    folder = f"{root}/{level}"
    done = set()
    if location.is_url(root):
        fs, where = location.filesystem(folder)
        done = {f"{folder}/{posixpath.relpath(p, where)}" for p in fs.find(where)}
    else:
        for dirpath, _, names in os.walk(folder):
            for n in names:
                if n.endswith(_PART):  # a tile an interrupted run was writing: never finished
                    os.remove(os.path.join(dirpath, n))
                else:
                    done.add(os.path.join(dirpath, n))
    cols, rows = tiler.grid(level)
    # Whole bands of tile rows about a source chunk high (read amplification stays small),
    # split across when a band would hold too many pixels.
    k = tiler.top - level
    j = tiler.nearest_level(k)
    chunk_rows = tiler.levels[j].labels.chunks[0]
    per_tile = tiler.tile_size * 2 ** (k - j)
    band = max(1, chunk_rows // per_tile)
    across = max(1, _TASK_PIXELS // (band * per_tile * per_tile))
    blocks = []
    for r0 in range(0, rows, band):
        for c0 in range(0, cols, across):
            block = [
                (c, r)
                for r in range(r0, min(r0 + band, rows))
                for c in range(c0, min(c0 + across, cols))
                if f"{root}/{tiler.path(level, c, r)}" not in done
            ]
            if block:
                blocks.append(block)
    return blocks


def _manifest(store: Store, layout: str, tiler: DeepZoom) -> dict:
    """What identifies a tile set: the store's labels and colours, and the options."""
    return {
        "store": store.path,
        "shape": list(store.labels.shape),
        "codebook": codebook_json(store.codebook),
        "mse": store.meta.mse,
        "layout": layout,
        "tile_size": tiler.tile_size,
        "overlap": tiler.overlap,
    }


def write_tiles(
    store,
    out,
    *,
    layout: str = defaults.TILE_LAYOUTS[0],
    tile_size: int = defaults.TILE_SIZE,
    overlap: int = defaults.TILE_OVERLAP,
    overwrite: bool = False,
    client=None,
    workers: int | None = None,
    show_progress: bool = False,
) -> int:
    """Write the tile pyramid of ``store`` to the folder or object-store prefix ``out``.

    Parameters
    ----------
    store : path-like, URL or Store
        The store to cut tiles from; its labels are read once, band by band.
    out : path-like or URL
        Deep Zoom: ``out.dzi`` and ``out_files/`` (a ``.dzi`` suffix given is
        dropped); XYZ: the folder ``out/``. A URL (``s3://bucket/web/scan``)
        writes to that object-store prefix.
    layout : {"deepzoom", "xyz"}
    tile_size, overlap : int
        Deep Zoom's tile side and overlap (libvips' defaults); XYZ tiles are
        always 256 pixels without overlap.
    overwrite : bool
        Replace a finished tile set; without it one is refused.
    client : distributed.Client or str, optional
        Run on this client, or on the scheduler at this address.
    workers : int, optional
        Run on a local cluster of this many worker processes.
    show_progress : bool
        Progress bars on stderr.

    Returns
    -------
    int
        The number of tiles written: all of them, or those an interrupted run
        with the same store and options left out.

    Raises
    ------
    BigquantError
        A store that is not one, an output folder whose parent does not exist,
        or unfinished tiles of another store or other options there.
    ParameterError
        A bad option, or a finished tile set at ``out`` without ``overwrite``.

    Notes
    -----
    Each task reads one block of labels (about a chunk's rows) and writes its
    tiles, each under a temporary name renamed once whole (on an object store
    in one put each, which no one sees before it is whole); the ``.dzi`` (and
    the manifest's ``complete``) come last. A store without a label pyramid
    first gets one in a temporary Zarr group beside the output (a prefix, on an
    object store), where every worker reads it, written chunk by chunk
    (`bigquant.pyramid.halve`), so no level is held in memory. A folder holding
    anything but bigquant tiles is refused, ``overwrite`` or not.

    Examples
    --------
    >>> write_tiles("scan.zarr", "web/scan")  # web/scan.dzi, web/scan_files/  # doctest: +SKIP
    """
    if layout not in defaults.TILE_LAYOUTS:
        raise ParameterError(
            f"`layout` must be one of {', '.join(defaults.TILE_LAYOUTS)}, not {layout!r}"
        )
    store = store if isinstance(store, Store) else open_store(store)
    # A file:// URL is a local folder: its tiles are renamed into place like any.
    out = location.normalize(str(out).removeprefix("file://")).rstrip("/")
    if layout == "deepzoom":
        out = out.removesuffix(".dzi")
        root, finished = f"{out}_files", f"{out}.dzi"
        tiler = DeepZoom(store, tile_size, overlap)
    else:
        root = finished = out
        tiler = XYZ(store)
    if not location.is_url(root) and not os.path.isdir(os.path.dirname(root)):
        raise BigquantError(f"{os.path.dirname(root)}: no such directory")
    if _inside(root, store.path) or _inside(store.path, root):
        # --overwrite empties the tiles' folder: never one that holds the store, or inside it.
        raise BigquantError(f"{root}: the tiles would overwrite their own store")
    manifest = {**_manifest(store, layout, tiler), "complete": False}
    # One writer: a second run into the same output stops at once. A run that is gone
    # left only whole tiles (each renamed once written), so its claim is taken over.
    with Output(finished).claim(take_stale=True):
        _prepare(root, finished, manifest, layout, overwrite)
        written = _write_missing(tiler, root, store, client, workers, show_progress)
        if layout == "deepzoom":
            _write_file(tiler.dzi(), finished)
        _write_file(json.dumps({**manifest, "complete": True}), f"{root}/{MANIFEST}")
    return written


def _write_missing(tiler: DeepZoom, root: str, store: Store, client, workers, show_progress):
    """Write the tiles ``root`` lacks, in parallel; return how many were written."""
    from .cluster import ready, scheduler
    from .progress import compute, progress

    with scheduler(client, workers=workers):
        ready()
        need = _need(tiler, root)
        lacks = len(tiler.levels) == 1 and any(need[level] for level in range(tiler.top))
        # The levels beside the output, where every worker that writes it reads them.
        with _temporary_folder(root) if lacks else contextlib.nullcontext() as tmp:
            if lacks:
                log.info("making the label levels %s lacks (2x2 mode)", store.path)
                for n, level in make_levels(tiler.levels[0].labels, tmp, store, show_progress):
                    tiler.add_level(n, level)
                need = _need(tiler, root)  # blocks sized for the levels read now
            tasks = _tasks(tiler, root, need)
            with progress("tiles", show_progress):
                return sum(compute(*tasks))


@contextlib.contextmanager
def _temporary_folder(root: str):
    """A new folder beside ``root`` (a prefix, on an object store), removed after the block."""
    folder = location.sibling(root, f".bigquant-levels-{uuid.uuid4().hex}")
    if not location.is_url(folder):
        os.makedirs(folder)
    try:
        yield folder
    finally:
        location.remove(folder)


def _need(tiler: DeepZoom, root: str) -> dict[int, list]:
    """The blocks of missing tiles (`_missing`) of every level."""
    return {level: _missing(tiler, root, level) for level in range(tiler.top + 1)}


def _tasks(tiler: DeepZoom, root: str, need: dict) -> list:
    import dask

    write = dask.delayed(_write_block, pure=False)
    return [write(tiler, root, level, block) for level, blocks in need.items() for block in blocks]


def make_levels(
    labels, tmp: str, store: Store, show_progress: bool = False, stop=None, step: int = 1
):
    """Yield the label levels a store without a pyramid lacks, for tiles and `bigquant.view`:
    ``(halvings, LabelArray)`` of every ``step``-th halving of ``labels`` (the 2x2 mode),
    each once it is whole, until one fits a chunk (the last may be fewer halvings on).

    Each is written to a Zarr group in ``tmp`` from the one before, chunk by chunk
    (`bigquant.pyramid.halve`), in one pass over it: a viewer that makes every third level
    reads the labels once before its first screen, not once per level. Once ``stop`` (a
    `threading.Event`) is set, the level being made is left unfinished and no more are made.
    """
    import zarr

    from .progress import progress

    group = zarr.open_group(location.zarr_store(f"{tmp}/levels.zarr", read_only=False), mode="w")
    (cy, cx), (h, w), left = labels.chunks, labels.shape, 0
    while h > cy or w > cx:
        h, w, left = -(-h // 2), -(-w // 2), left + 1
    level, n = labels, 0
    while n < left:
        times = min(step, left - n)
        n += times
        name = f"{LABELS_KEY}_{n}"
        with progress(f"label level {n}", show_progress):
            level = halve(level, group, name, store.meta.nodata_label, stop, times)
        if stop is not None and stop.is_set():
            return
        yield n, LabelArray(store.path, level)


def _prepare(root: str, finished: str, manifest: dict, layout: str, overwrite: bool) -> None:
    """Make ``root`` ready: emptied with ``overwrite``, else resumed or refused.

    A finished tile set (its ``.dzi``, or a manifest marked complete) is refused
    without ``overwrite``; unfinished tiles of the same store and options are
    kept for this run to complete, those of another refused. A folder holding
    anything but bigquant tiles (no manifest) is refused, ``overwrite`` or not:
    nothing the user had there is deleted.
    """
    path = f"{root}/{MANIFEST}"
    if location.exists(root) and not location.isdir(root):
        raise ParameterError(f"{root} is a file, not a folder of tiles: nothing was deleted")
    try:
        found = json.loads(location.read_bytes(path) or b"null")
    except (OSError, ValueError):
        found = None
    found = found if isinstance(found, dict) else None
    if found is None and _holds_files(root):
        raise ParameterError(
            f"{root} holds files that are not bigquant tiles: tiles go to a new or empty "
            "folder, or over tiles of their own; nothing was deleted"
        )
    done = location.exists(finished) if layout == "deepzoom" else bool(found and found["complete"])
    if overwrite:
        if layout == "deepzoom":
            location.remove(finished)
        # The manifest first: a removal cut short leaves no set that looks finished.
        location.remove(root, first=(MANIFEST,))
    elif done:
        raise ParameterError(f"{finished} already exists (use `overwrite` to replace it)")
    elif found is not None and {**found, "complete": False} != manifest:
        raise ParameterError(
            f"{root} holds tiles of another store or other options (use `overwrite` to replace them)"
        )
    _write_file(json.dumps(manifest), path)
