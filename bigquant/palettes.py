"""Codebooks a user already has: another store's, a palette TIFF's colour map, or a palette file.

Instead of fitting one (`bigquant.fit`), a run can be given its codebook
(``compress(..., codebook=FROM)``, ``--codebook FROM``). `load_codebook` reads
it, `check_codebook` refuses one that does not fit the image. Formats:

* a bigquant store: its colours, in its order (not its nodata row), with its dtype;
* a palette (indexed) TIFF: one `bigquant.export.decompress` wrote (``--palette``) gives
  back its store's colours exactly, in their order and values (its ImageDescription
  records how many and their type); another writer's gives the colour-map entries its
  pixels use (reading every pixel once, chunk by chunk), as 8-bit RGB (``>> 8``, as the
  image is read), in the map's order, duplicates and the GDAL_NODATA index dropped:
  entries no pixel uses (padding, or classes of a colour table absent from the picture)
  are not taken as colours;
* a GIMP palette (``.gpl``): ``R G B name`` lines, 8-bit;
* a hex list (``.hex``, ``.txt``): one ``#rrggbb`` (or ``rrggbb``) per line, 8-bit, as
  Lospec and many palette sites export;
* CSV (``.csv``): one colour per row, values in the image's own units (a header
  row is skipped);
* JSON (``.json``): a list of colours, each a list of values in the image's own
  units or a ``"#rrggbb"`` string.

Reading one reads only that file: a store's metadata, a TIFF's header (and, for a palette
TIFF not written by bigquant, its pixels).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from dataclasses import dataclass

import numpy as np

from . import defaults, location
from .errors import BigquantError
from .read import TIFF_MAGIC


@dataclass(frozen=True)
class GivenCodebook:
    """A codebook and where it came from.

    ``eight_bit`` marks a format whose values are 8-bit by definition (GIMP,
    hex, palette TIFF): they fit only 8-bit images.
    """

    colors: np.ndarray
    origin: dict
    eight_bit: bool = False


def load_codebook(source) -> GivenCodebook:
    """Read the codebook at ``source`` (a path or URL; see the module for the formats).

    Reads only that file: a store's metadata (never its labels), a palette
    file, or a palette TIFF's header. A palette TIFF that bigquant did not
    write is the exception: its pixels are read whole once, chunk by chunk,
    to keep only the colour-map entries they use.

    Parameters
    ----------
    source : path-like or URL
        A bigquant store, a palette (indexed) TIFF, or a palette file:
        ``.gpl`` (GIMP), ``.hex`` / ``.txt`` (one ``#rrggbb`` a line),
        ``.csv`` or ``.json``.

    Returns
    -------
    GivenCodebook
        Its ``colors`` (a ``(K, C)`` array: a store's in its dtype, others as
        read) and ``origin`` (``{"kind": …, "path": …}``, recorded as the
        store's ``codebook_from``), for `compress`'s ``codebook``. Whether
        the colours fit an image is checked when they are applied.

    Raises
    ------
    BigquantError
        A missing file, a file of none of these formats, an unreadable or
        empty palette, a TIFF without a colour map or whose pixels use none
        of its entries, or a store `open_store` refuses.
    ClusterError
        Worker processes died while reading a palette TIFF's pixels (on a
        cluster).

    Examples
    --------
    >>> import bigquant
    >>> given = bigquant.load_codebook("pico-8.hex")  # doctest: +SKIP
    >>> given.colors.shape, given.origin["kind"]  # doctest: +SKIP
    ((16, 3), 'hex list')
    >>> bigquant.compress("scan.tif", "scan.zarr", codebook=given)  # doctest: +SKIP
    """
    path = location.normalize(source)
    if not location.exists(path):
        raise BigquantError(f"{source}: no such file or directory")
    suffix = posixpath.splitext(location.name(path))[1].lower()
    if location.isdir(path):
        return _from_store(path)
    with location.open_input(path) as fh:
        head = fh.read(4)
    if head[:4] in TIFF_MAGIC:
        return _from_palette_tiff(path)
    readers = {".gpl": _gimp, ".hex": _hex, ".txt": _hex, ".csv": _csv, ".json": _json}
    if suffix not in readers:
        raise BigquantError(
            f"{source}: not a codebook bigquant reads (a bigquant store, a palette TIFF, "
            ".gpl, .hex/.txt, .csv or .json)"
        )
    with location.open_input(path) as fh:
        text = fh.read().decode("utf-8", errors="replace")
    try:
        colors, eight_bit = readers[suffix](text)
    except (ValueError, TypeError, IndexError) as exc:
        raise BigquantError(f"{source}: not a readable {suffix[1:]} palette ({exc})") from None
    if colors.size == 0:
        raise BigquantError(f"{source}: the palette holds no colour")
    kind = {".gpl": "GIMP palette", ".hex": "hex list", ".txt": "hex list"}.get(suffix, suffix[1:])
    return GivenCodebook(colors, {"kind": kind, "path": path}, eight_bit)


def check_codebook(given: GivenCodebook, dtype: np.dtype, n_channels: int, nodata) -> np.ndarray:
    """The colours as ``dtype`` values, or a `BigquantError` if they do not fit the image."""
    colors, where = given.colors, given.origin.get("path", "the codebook")
    if colors.ndim != 2 or colors.shape[1] != n_channels:
        raise BigquantError(
            f"{where}: a codebook of {colors.shape[-1]} channel(s) does not fit an image of "
            f"{n_channels}"
        )
    limit = defaults.MAX_COLORS - (nodata is not None)
    if not 1 <= len(colors) <= limit:
        raise BigquantError(f"{where}: {len(colors)} colours; a codebook holds 1 to {limit}")
    dtype = np.dtype(dtype)
    if given.eight_bit and dtype != np.uint8:
        raise BigquantError(f"{where}: an 8-bit palette does not fit an image of {dtype} values")
    values = colors.astype(np.float64)
    if not np.isfinite(values).all():
        raise BigquantError(f"{where}: the codebook holds NaN or infinite values")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if (values != np.rint(values)).any() or values.min() < info.min or values.max() > info.max:
            raise BigquantError(
                f"{where}: codebook values from {values.min():g} to {values.max():g} do not fit "
                f"an image of {dtype} values ({info.min} to {info.max})"
            )
    return values.astype(dtype)


def _from_store(path: str) -> GivenCodebook:
    from .store import open_store

    store = open_store(path)
    colors = store.codebook[: store.meta.n_colors]
    return GivenCodebook(colors, {"kind": "store", "path": path})


def _from_palette_tiff(path: str) -> GivenCodebook:
    import tifffile

    try:
        with location.open_input(path) as fh, tifffile.TiffFile(fh) as tif:
            page = tif.pages[0]
            colormap = page.colormap if page.photometric == tifffile.PHOTOMETRIC.PALETTE else None
            written = _bigquant_codebook(page.description)
            nodata = page.tags.get(42113)  # GDAL_NODATA: the index of pixels without data
            nodata = None if nodata is None else nodata.value
    except Exception as exc:
        raise BigquantError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
    if colormap is None:
        raise BigquantError(f"{path}: not a palette (indexed) TIFF: it has no colour map")
    origin = {"kind": "palette TIFF", "path": path}
    if written is not None and written["colors"] <= colormap.shape[1]:
        # bigquant's own: the store's colours are the first entries, scaled back exactly.
        entries = colormap[: written["channels"], : written["colors"]].T.astype(np.float64)
        colors = np.rint(entries * (written["peak"] / 65535)).astype(written["dtype"])
        return GivenCodebook(colors, origin, colors.dtype == np.uint8)
    # Another writer's: the entries its pixels use, as the image is read (8-bit, `>> 8`), in
    # the map's order, duplicates dropped. Unused entries (padding, classes a colour table
    # defines but the picture lacks) are not colours of the picture.
    from .kernels.convert import colormap_lut
    from .read import palette_usage

    used = palette_usage(path) > 0
    with contextlib.suppress(ValueError, TypeError):
        index = float(str(nodata).strip().rstrip("\x00"))  # "None", "nan": no such index
        if index.is_integer() and 0 <= index < len(used):
            used[int(index)] = False
    lut = colormap_lut(colormap)[used]
    if not len(lut):
        raise BigquantError(f"{path}: the palette TIFF's pixels use no colour of its map")
    _, first = np.unique(lut, axis=0, return_index=True)
    return GivenCodebook(lut[np.sort(first)], origin, True)


def _bigquant_codebook(description: str) -> dict | None:
    """What `bigquant.export.palette_description` recorded in an ImageDescription, or None."""
    try:
        written = json.loads(description)["bigquant"]["codebook"]
        checked = {
            "colors": int(written["colors"]),
            "dtype": np.dtype(written["dtype"]),
            "peak": float(written["peak"]),
            "channels": int(written["channels"]),
        }
    except (ValueError, TypeError, KeyError):
        return None
    if checked["colors"] < 1 or checked["channels"] not in (1, 3):
        return None
    return checked


def _gimp(text: str) -> tuple[np.ndarray, bool]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "GIMP Palette":
        raise ValueError("no 'GIMP Palette' header")
    rows = [
        line.split()[:3]
        for line in lines[1:]
        if line.strip() and not line.lstrip().startswith("#") and ":" not in line.split()[0]
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, 3), True


def _hex(text: str) -> tuple[np.ndarray, bool]:
    codes = [line.strip().lstrip("#") for line in text.splitlines() if line.strip()]
    if any(len(c) != 6 for c in codes):
        raise ValueError("each line must be one #rrggbb colour")
    return np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in codes]), True


def _csv(text: str) -> tuple[np.ndarray, bool]:
    import csv

    rows = [r for r in csv.reader(text.splitlines()) if r and any(v.strip() for v in r)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    return np.array([[float(v) for v in r] for r in rows]), False


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _json(text: str) -> tuple[np.ndarray, bool]:
    entries = json.loads(text)
    if not isinstance(entries, list):
        raise ValueError("expected a list of colours")
    if all(isinstance(e, str) for e in entries):
        return _hex("\n".join(entries))
    return np.array(entries, dtype=np.float64).reshape(len(entries), -1), False
