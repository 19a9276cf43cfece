"""The bigquant store: a Zarr group of per-pixel labels plus the codebook, and safe outputs.

Contract (other tools read exactly this)::

    DST/                    Zarr group (format 3 by default, 2 on request)
      labels                2-D (rows, columns) array, uint8 for K ≤ 256 else uint16
      .attrs["codebook"]    K rows of C channel values in the source dtype's range
      .attrs["bigquant"]    `StoreMeta`: format_version, source, n_colors, seed, ...,
                            mse, psnr, ..., and "complete": true, written last

``np.asarray(attrs["codebook"])[labels]`` is the quantized image. This module
alone writes and reads these keys: `StoreMeta` is the ``bigquant`` attribute,
`create_store` / `finish_store` write a store, `open_store` / `open_partial`
read one back (the OME-Zarr keys of a pyramid belong to `bigquant.pyramid`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import __version__, defaults, location
from .defaults import ZARR_FORMATS
from .errors import BigquantError, ParameterError
from .label import apply_codebook

# dask.array only inside the functions that build graphs: worker processes running this
# module's chunk tasks never import it (see bigquant.cluster._WORKER_MODULES).
if TYPE_CHECKING:
    import dask.array as da

FORMAT_VERSION = 1
ATTR_KEY = "bigquant"
CODEBOOK_KEY = "codebook"
LABELS_KEY = "labels"
#: Per-chunk squared errors and colour counts, present only while a store is unfinished.
STATS_KEY = "chunk_stats"
#: Per chunk: squared error sum, ΔE_OK sum and the pixels it is summed over; then the counts.
STATS_HEAD = 3
#: A Zarr node's own metadata files (format 3, and 2). At the root of an output they are what
#: makes it readable (and a store complete): copied last, deleted first (see `bigquant.output.Output.write`).
ROOT_METADATA = ("zarr.json", ".zattrs", ".zarray", ".zgroup")

#: Centimetres in each unit of OME-NGFF a physical pixel size (`SourceInfo.pixel_size`) can be in.
CENTIMETRES = {"angstrom": 1e-8, "nanometer": 1e-7, "micrometer": 1e-4, "millimeter": 0.1,
               "centimeter": 1.0, "meter": 100.0}  # fmt: skip

log = logging.getLogger("bigquant")


@dataclass(frozen=True)
class SourceInfo:
    """The image a store was made from.

    Attributes
    ----------
    path : str or None
        Local path or URL; None for an array.
    shape : list of int
        ``[rows, columns, channels]``.
    dtype : str
        The pixels' (and the codebook's) numpy dtype.
    photometric : str
        TIFF photometric interpretation, or a best guess for other sources.
    geotiff : dict or None
        Its GeoTIFF tags, verbatim (`bigquant.read.geotiff_tags`): what
        locates it on Earth, written again into every TIFF output.
    pixel_size : dict or None
        Physical pixel size ``{"y", "x", "unit"}`` of an OME-TIFF source
        (`bigquant.read.Image`): the pyramid's scales, the TIFF outputs' resolution.
    extrasamples : list of int
        TIFF ExtraSamples of the channels past the colour ones (1 associated,
        2 unassociated alpha, 0 other), written again into TIFF outputs.
    bits : int or None
        Significant bits of integer values (PSNR's peak is ``2**bits - 1``).
    orientation : int
        The source's TIFF Orientation; labels are in stored order, TIFF
        outputs carry the tag and previews are drawn turned as it says.
    nodata : float, "nan" or None
        The value of pixels without data (JSON has no NaN: ``"nan"``), which
        the codebook's last row holds (see `StoreMeta.nodata_label`).
    converted : str or None
        How the stored values were turned into the codebook's (``"CMYK to RGB"``, …).
    """

    path: str | None
    shape: list[int]
    dtype: str
    photometric: str | None = None
    geotiff: dict | None = None
    pixel_size: dict | None = None
    extrasamples: list[int] = dataclasses.field(default_factory=list)
    bits: int | None = None
    orientation: int = 1
    nodata: float | str | None = None
    converted: str | None = None

    @classmethod
    def of(cls, image, data, nodata: float | None) -> SourceInfo:
        """What a store records of an `Image`: its fields of the same names.

        Parameters
        ----------
        image : Image
            The image as read.
        data : dask.array.Array
            Its pixels as labelled: the shape and dtype recorded.
        nodata : float, optional
            The nodata value its pixels can hold (see `compress`).

        Returns
        -------
        SourceInfo
            ``nodata`` as strict JSON holds it; every other field but
            ``shape`` and ``dtype`` copied from the image's field of its name.
        """
        own = ("shape", "dtype")  # of the pixels as labelled, not fields of an Image
        same = {
            f.name: getattr(image, f.name) for f in dataclasses.fields(cls) if f.name not in own
        }
        return cls(
            **{
                **same,
                "shape": list(data.shape),
                "dtype": str(data.dtype),
                "extrasamples": list(image.extrasamples),
                "nodata": _json_number(nodata),
            }
        )

    @property
    def nodata_value(self) -> float | None:
        """``nodata`` as a number (NaN for ``"nan"``)."""
        return float(self.nodata) if self.nodata is not None else None

    @property
    def peak(self) -> float:
        """The largest value a pixel can hold: ``2**bits - 1``, or 1.0 for floats."""
        if self.bits:
            return float(2**self.bits - 1)
        dtype = np.dtype(self.dtype)
        return float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0


@dataclass(frozen=True, kw_only=True)
class StoreMeta:
    """The ``bigquant`` attribute of a store: how it was made and how good it is.

    What `compress` returns and `Store.meta` holds. For the attribute's
    exact JSON form, see the store format specification in the
    documentation (docs/store.md). The attribute's keys are the fields, in
    this order. Fields later versions added have defaults, so stores of
    earlier ones (same ``format_version``) still read.

    Parameters
    ----------
    format_version : int
        Version of the store format.
    bigquant_version : str
        Version of bigquant that wrote the store.
    source : SourceInfo
        The image the store was made from: path, shape, dtype and the tags
        written again into TIFF outputs.
    n_colors_requested : int
        K as asked for (or the size of a given codebook).
    n_colors : int
        Colours in the codebook, not counting the nodata row: can be fewer
        than requested (see `FitResult`).
    nodata_label : int, optional
        The codebook row reserved for pixels without data (the last); None
        when the source has none.
    codebook_from : dict, optional
        Where a codebook that was not fitted to this image came from
        (``{"kind": "store" | "palette TIFF" | "GIMP palette" | "hex list" |
        "csv" | "json" | "array", "path": …}``, or ``{"kind": "collection",
        "paths": […]}`` for one fitted to several images); None when fitted here.
    seed : int
        Seed of the sample and the k-means init.
    sample_size : int
        Pixels the codebook was fitted on (0 for a given codebook).
    max_iter : int, optional
        The bound on Lloyd iterations the run was given.
    space : {"rgb", "oklab", "lab"}
        Colour space of the fit and the assignment.
    dither : {None, "ordered", "floyd-steinberg"}
        Dithering of the labels.
    n_iter : int
        Lloyd iterations run (0 for a given codebook, or an image of at most
        K colours).
    run : dict
        What a resumed run must match (source identity and parameters).
    complete : bool
        True once the run finished; written last. `open_store` refuses a
        store without it.
    mse : float, optional
        Mean squared error per channel value, over pixels with data; None
        until the labels are written.
    psnr : float, optional
        Peak signal-to-noise ratio in dB (peak: `SourceInfo.peak`); None
        until the labels are written, and for a lossless result.
    delta_e : float, optional
        Mean ΔE_OK (OKLab distance); None until the labels are written, and
        for images that are not RGB.
    counts : list of int, optional
        Pixels per codebook row (the nodata row included); None until the
        labels are written.
    pyramid : list of str, optional
        The label levels of a store written with ``pyramid=True``.

    Examples
    --------
    >>> import bigquant
    >>> written = bigquant.compress("scan.tif", "scan.zarr", 256)  # doctest: +SKIP
    >>> bigquant.open_store("scan.zarr").meta == written  # doctest: +SKIP
    True
    >>> written.source.shape, written.counts[:3]  # doctest: +SKIP
    ([40000, 60000, 3], [1843201, 920344, 1203311])
    """

    format_version: int = FORMAT_VERSION
    bigquant_version: str = __version__
    source: SourceInfo
    n_colors_requested: int
    n_colors: int
    nodata_label: int | None = None
    codebook_from: dict | None = None
    seed: int
    sample_size: int
    max_iter: int | None = None
    space: str = "rgb"
    dither: str | None = None
    n_iter: int
    run: dict = dataclasses.field(default_factory=dict)
    complete: bool = False
    mse: float | None = None
    psnr: float | None = None
    delta_e: float | None = None
    counts: list[int] | None = None
    pyramid: list[str] | None = None

    def to_attrs(self) -> dict:
        """The JSON attribute: every field, in order (an absent pyramid is left out).

        Returns
        -------
        dict
            The ``bigquant`` attribute (see the store format specification
            in the documentation, docs/store.md); `from_attrs` reads it back.

        Examples
        --------
        >>> import bigquant
        >>> meta = bigquant.open_store("scan.zarr").meta  # doctest: +SKIP
        >>> bigquant.StoreMeta.from_attrs(meta.to_attrs()) == meta  # doctest: +SKIP
        True
        """
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if k != "pyramid" or self.pyramid is not None}

    def codebook_text(self) -> str:
        """Where the codebook came from and how it was fitted, in words (as ``info`` says it).

        Returns
        -------
        str
            ``"(256 requested), fitted on … sampled pixels in … iterations, seed 0"``,
            the same for a codebook fitted to a collection, or ``"applied from …"``.

        Examples
        --------
        >>> import bigquant
        >>> bigquant.open_store("scan.zarr").meta.codebook_text()  # doctest: +SKIP
        '(256 requested), fitted on 1000000 sampled pixels in 10 iterations, seed 0'
        """
        origin = self.codebook_from
        if origin is None:
            return (
                f"({self.n_colors_requested} requested), fitted on {self.sample_size} sampled "
                f"pixels in {self.n_iter} iterations, seed {self.seed}"
            )
        if origin.get("kind") == "collection":
            return (
                f"({origin['n_colors_requested']} requested), fitted to {origin_text(origin)} on "
                f"{origin['sample_size']} sampled pixels in {origin['n_iter']} iterations, "
                f"seed {self.seed}"
            )
        return f"applied from {origin_text(origin)}"

    @classmethod
    def from_attrs(cls, attrs: dict) -> StoreMeta:
        """Read the attribute back; keys this version does not know are ignored.

        Parameters
        ----------
        attrs : dict
            A store's ``bigquant`` attribute (what `to_attrs` writes).

        Returns
        -------
        StoreMeta
            The metadata; fields the attribute lacks take their defaults.

        Raises
        ------
        KeyError
            The ``source`` key is missing.
        TypeError
            A required field is missing, or ``source.dtype`` is not a dtype
            numpy knows.
        ValueError
            A malformed ``source.dtype`` that numpy rejects with it.

        Examples
        --------
        >>> import json
        >>> import bigquant
        >>> with open("scan.zarr/zarr.json") as f:  # doctest: +SKIP
        ...     attrs = json.load(f)["attributes"]["bigquant"]
        >>> bigquant.StoreMeta.from_attrs(attrs).n_colors  # doctest: +SKIP
        256
        """
        values = _known(cls, attrs)
        values["source"] = SourceInfo(**_known(SourceInfo, attrs["source"]))
        np.dtype(values["source"].dtype)  # a dtype numpy knows, or ValueError/TypeError
        return cls(**values)


def _json_number(value: float | None) -> float | int | str | None:
    """A value as strict JSON holds it: NaN as ``"nan"``, integral floats as integers."""
    if value is None or math.isnan(value):
        return None if value is None else "nan"
    return int(value) if value == int(value) else value


def origin_text(origin: dict) -> str:
    """Where a codebook came from (`StoreMeta.codebook_from`), in words."""
    if origin.get("kind") == "collection":
        return f"a collection of {len(origin['paths'])} images ({', '.join(origin['paths'])})"
    return f"{origin.get('kind', 'codebook')} {origin.get('path', '')}".rstrip()


def _known(cls, attrs: dict) -> dict:
    """The items of ``attrs`` that are fields of dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in attrs.items() if k in names}


def labels_compressor(zarr_format: int):
    """Zstandard level 3: on photographs' labels it beats Blosc-zstd in both speed and size."""
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Zstd(level=3)
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=3)


def create_label_array(
    group,
    name: str,
    shape,
    chunks,
    dtype,
    dims: tuple[str, str],
    nodata: int | None = None,
    shards=None,
):
    """A 2-D label array in ``group``, as every tool should read it.

    Zstandard (`labels_compressor`); every chunk written, even all-zero ones,
    so a missing chunk means lost data (and chunk files show progress);
    dimension names for xarray (``dimension_names`` in format 3, the
    ``_ARRAY_DIMENSIONS`` attribute in format 2); and, in format 2, no fill
    value, which GDAL would report as NoData, hiding every pixel of colour 0.
    Format 3 requires a fill value: 0 (GDAL 3.6 does not read format 3). Where
    the source has nodata, its label ``nodata`` is the fill value in both:
    GDAL then reports it as NoData, as it should. ``shards``: in format 3,
    shards of that shape, each a square of whole ``chunks``.
    """
    zarr_format = group.metadata.zarr_format
    array = group.create_array(
        name,
        shape=tuple(shape),
        chunks=tuple(chunks),
        shards=None if shards is None else tuple(shards),
        dtype=dtype,
        compressors=labels_compressor(zarr_format),
        fill_value=nodata if nodata is not None else None if zarr_format == 2 else 0,
        config={"write_empty_chunks": True},
        dimension_names=dims if zarr_format == 3 else None,
        overwrite=True,
    )
    if zarr_format == 2:
        array.attrs["_ARRAY_DIMENSIONS"] = list(dims)
    return array


def check_zarr_format(zarr_format: int) -> None:
    if zarr_format not in ZARR_FORMATS:
        raise ParameterError(
            f"`zarr_format` must be {' or '.join(map(str, sorted(ZARR_FORMATS)))}, not {zarr_format}"
        )


@dataclass(frozen=True)
class PartialStore:
    """An unfinished store being written: its group, label array and per-chunk stats.

    ``stats[row, col]`` holds a chunk's squared error sum, ΔE_OK sum (and the
    pixels it sums over) and colour counts once its labels are written (NaN before): it is how an
    interrupted run knows what is done. `finish_store` removes it.
    """

    group: object
    labels: object
    stats: object
    codebook: np.ndarray
    meta: StoreMeta

    def finished_chunks(self) -> np.ndarray:
        """``(rows, cols)`` of the chunks whose labels are written (their stats are)."""
        return ~np.isnan(self.stats[:, :, 0])


def create_store(
    path: str,
    chunks,
    codebook: np.ndarray,
    meta: StoreMeta,
    *,
    zarr_format: int = 3,
    unit: int = 1,
) -> PartialStore:
    """Create the group with its codebook and metadata, an empty ``labels`` array and the stats.

    ``labels`` has the shape of ``meta.source`` and the given ``chunks``.
    ``unit``: chunks a side of one write unit (`bigquant.write.write_unit`);
    above 1, the labels' shards in format 3, and each stats chunk's rows
    and columns in both formats, so that one task writes each.
    """
    import zarr

    from .kernels.nearest import label_dtype

    check_zarr_format(zarr_format)
    shape = tuple(meta.source.shape[:2])
    group = zarr.open_group(
        location.zarr_store(path, read_only=False), mode="w", zarr_format=zarr_format
    )
    labels = create_label_array(
        group,
        LABELS_KEY,
        shape,
        chunks,
        label_dtype(len(codebook)),
        ("y", "x"),
        nodata=meta.nodata_label,
        shards=[unit * c for c in chunks] if unit > 1 and zarr_format == 3 else None,
    )
    grid = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    stats = group.create_array(
        STATS_KEY,
        shape=(*grid, STATS_HEAD + len(codebook)),
        chunks=(unit, unit, STATS_HEAD + len(codebook)),
        dtype=np.float64,
        fill_value=np.nan,
    )
    group.attrs.update({CODEBOOK_KEY: codebook_json(codebook), ATTR_KEY: meta.to_attrs()})
    return PartialStore(group, labels, stats, codebook, meta)


def codebook_json(codebook: np.ndarray) -> list:
    """The codebook as strict JSON: NaN (a float image's nodata row) becomes null, which
    ``np.asarray(codebook, dtype=float)`` reads back as NaN."""
    rows = codebook.tolist()
    if codebook.dtype.kind == "f" and np.isnan(codebook).any():
        rows = [[None if v != v else v for v in row] for row in rows]
    return rows


def open_partial(path: str) -> PartialStore | None:
    """The unfinished store at ``path``, or None when there is none (or it is unreadable)."""
    import zarr

    try:
        group = zarr.open_group(location.zarr_store(path, read_only=False), mode="r+")
        meta = StoreMeta.from_attrs(group.attrs[ATTR_KEY])
        codebook = np.asarray(group.attrs[CODEBOOK_KEY], dtype=meta.source.dtype)
        return PartialStore(group, group[LABELS_KEY], group[STATS_KEY], codebook, meta)
    except Exception:
        return None


def finish_store(partial: PartialStore, meta: StoreMeta) -> StoreMeta:
    """Write the final metadata, marked complete, then drop the per-chunk stats.

    In that order: a run cut short in between leaves stats that say every
    chunk is done, so a resume finishes it at once.
    """
    meta = dataclasses.replace(meta, complete=True)
    partial.group.attrs[ATTR_KEY] = meta.to_attrs()
    del partial.group[STATS_KEY]
    return meta


@dataclass(frozen=True)
class Store:
    """An opened, validated bigquant store.

    Made by `open_store`, which checks what it can without reading pixels. For
    the layout on disk, see the store format specification in the
    documentation (docs/store.md). Holding one reads nothing: `labels_dask`
    and `quantized` are lazy, and computing either reads every label chunk
    once.

    Parameters
    ----------
    path : str
        Local path or URL.
    labels : zarr.Array
        The (rows, columns) label array, uint8 for K ≤ 256 else uint16.
    codebook : ndarray, shape (K, C)
        The colours, in the source's dtype; the last row is the nodata
        colour when ``meta.nodata_label`` is set.
    meta : StoreMeta
        ``attrs["bigquant"]``.

    Examples
    --------
    >>> import bigquant
    >>> store = bigquant.open_store("scan.zarr")  # doctest: +SKIP
    >>> store.shape, store.codebook.shape  # doctest: +SKIP
    ((40000, 60000, 3), (256, 3))
    """

    path: str
    labels: object
    codebook: np.ndarray
    meta: StoreMeta

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(rows, columns, channels)`` of the quantized image.

        Examples
        --------
        >>> import bigquant
        >>> bigquant.open_store("scan.zarr").shape  # doctest: +SKIP
        (40000, 60000, 3)
        """
        return (*self.labels.shape, self.codebook.shape[1])

    def labels_dask(self) -> da.Array:
        """Labels as a dask array chunked like the store.

        Returns
        -------
        dask.array.Array, shape (Y, X)
            The labels, lazily; computing all of it reads every label chunk
            once and holds every label in memory, so compute a window of it,
            or reduce it, rather than all of it.
            A chunk that cannot be read fails, when computed, with a
            `BigquantError` naming the store.

        Examples
        --------
        >>> import bigquant
        >>> labels = bigquant.open_store("scan.zarr").labels_dask()  # doctest: +SKIP
        >>> labels[:512, :512].compute().max()  # doctest: +SKIP
        np.uint8(251)
        """
        import dask.array as da

        return da.from_array(
            LabelArray(self.path, self.labels),
            chunks=self.labels.chunks,
            asarray=False,
            fancy=False,
            lock=False,
            meta=np.empty((0, 0), self.labels.dtype),
            name=False,  # a fresh name for each read: a store can be rewritten in place
        )

    def quantized(self) -> da.Array:
        """The quantized image ``codebook[labels]`` as a lazy ``(Y, X, C)`` dask array.

        Returns
        -------
        dask.array.Array, shape (Y, X, C)
            In the codebook's dtype, chunked like the labels. Computing all
            of it reads every label chunk once and holds the whole image in
            memory, so compute windows of it, or store it chunk by chunk
            (`decompress` does). Each chunk checks its labels against the
            codebook and fails, when computed, with a `BigquantError` on a
            label past its end.

        Examples
        --------
        >>> import bigquant
        >>> image = bigquant.open_store("scan.zarr").quantized()  # doctest: +SKIP
        >>> image[:512, :512].compute().shape  # doctest: +SKIP
        (512, 512, 3)
        """
        return apply_codebook(self.labels_dask(), self.codebook)

    def stored_bytes(self) -> int:
        """Bytes the store takes on disk.

        Returns
        -------
        int
            The size of every file (or object) under the store's path; lists
            them, reads none.

        Examples
        --------
        >>> import bigquant
        >>> bigquant.open_store("scan.zarr").stored_bytes()  # doctest: +SKIP
        412337152
        """
        return location.size(self.path)

    def levels(self) -> list[LabelArray]:
        """The label arrays: ``labels``, then the pyramid's levels, each the 2x2 mode of the last.

        Returns
        -------
        list of LabelArray
            Level 0 first; just the labels for a store without a pyramid. Reads
            the levels' metadata only.

        Raises
        ------
        BigquantError
            A listed level is missing or is not the halving of the one before.

        Examples
        --------
        >>> import bigquant
        >>> [a.shape for a in bigquant.open_store("scan.zarr").levels()]  # doctest: +SKIP
        [(40000, 60000), (20000, 30000), (10000, 15000)]
        """
        import zarr

        names = self.meta.pyramid or [LABELS_KEY]
        levels = [self.labels]
        if names != [LABELS_KEY]:
            group = zarr.open_group(location.zarr_store(self.path, read_only=True), mode="r")
            for name in names[1:]:
                if name not in group:
                    raise BigquantError(
                        f"{self.path}: corrupt store (pyramid level {name} missing)"
                    )
                level, (h, w) = group[name], levels[-1].shape
                if level.shape != (-(-h // 2), -(-w // 2)):
                    raise BigquantError(
                        f"{self.path}: corrupt store (pyramid level {name} is {level.shape}, "
                        f"not half of {(h, w)})"
                    )
                levels.append(level)
        return [LabelArray(self.path, a) for a in levels]

    def check(self, show_progress: bool = False) -> None:
        """Read every label once and check that each is a row of the codebook.

        `open_store` checks all it can without reading pixels; this reads the
        whole label array, chunk by chunk (memory holds a few chunks).

        Parameters
        ----------
        show_progress : bool
            A progress bar on stderr.

        Raises
        ------
        BigquantError
            A label chunk cannot be read, or a label points past the codebook.

        Examples
        --------
        >>> import bigquant
        >>> bigquant.open_store("scan.zarr").check()  # doctest: +SKIP
        """
        from .kernels.nearest import check_labels
        from .progress import compute, progress

        with progress("checking labels", show_progress):
            (top,) = compute(self.labels_dask().max())
        check_labels(top.reshape(1), len(self.codebook))

    def summary(self) -> dict:
        """What the store holds and how it was made, as JSON-ready values; reads no label.

        Returns
        -------
        dict
            Shape, dtype, source and how it was read, colours and their
            origin, quality, pyramid, CRS and GDAL geotransform, stored and
            raw bytes, the codebook and pixels per colour: what ``bigquant
            info --json`` prints (its keys are listed in the user guide).

        Examples
        --------
        >>> import bigquant
        >>> s = bigquant.open_store("scan.zarr").summary()  # doctest: +SKIP
        >>> s["crs"], round(s["compression_ratio"], 1)  # doctest: +SKIP
        ('EPSG:32633', 7.9)
        """
        from .read import georeference

        meta = self.meta
        crs, transform = georeference(meta.source.geotiff)
        height, width, channels = self.shape
        raw = height * width * channels * self.codebook.dtype.itemsize
        stored = self.stored_bytes()
        return {
            "path": str(self.path),
            "shape": [height, width, channels],
            "dtype": str(self.codebook.dtype),
            "photometric": meta.source.photometric,
            "extrasamples": meta.source.extrasamples,
            "bits": meta.source.bits,
            "converted": meta.source.converted,
            "orientation": meta.source.orientation,
            "source": meta.source.path,
            "n_colors": meta.n_colors,
            "nodata": meta.source.nodata,
            "nodata_label": meta.nodata_label,
            "codebook_from": meta.codebook_from,
            "n_colors_requested": meta.n_colors_requested,
            "seed": meta.seed,
            "sample_size": meta.sample_size,
            "n_iter": meta.n_iter,
            "space": meta.space,
            "mse": meta.mse,
            "psnr": meta.psnr,
            "delta_e": meta.delta_e,
            "pyramid": meta.pyramid,
            "crs": crs,
            "geotransform": transform,
            "stored_bytes": stored,
            "raw_bytes": raw,
            "compression_ratio": raw / stored if stored else None,
            "codebook": codebook_json(self.codebook),
            "counts": meta.counts,
        }


class LabelArray:
    """A label array of a store (level 0 or a pyramid level), read by window.

    Indexing reads only the chunks under the window, like the ``zarr.Array``
    it wraps; a chunk that cannot be read raises a `BigquantError` that names
    the store as corrupt. What `Store.levels` returns and `Store.labels_dask` reads.

    Parameters
    ----------
    path : str
        The store, named in errors.
    labels : zarr.Array
        The 2-D label array.

    Examples
    --------
    >>> import bigquant
    >>> top = bigquant.open_store("scan.zarr").levels()[-1]  # doctest: +SKIP
    >>> top[:256, :256].shape  # doctest: +SKIP
    (256, 256)
    """

    def __init__(self, path: str, labels):
        self.path, self.labels = path, labels
        self.shape, self.dtype, self.ndim = labels.shape, labels.dtype, labels.ndim
        self.chunks = labels.chunks

    def __getitem__(self, index) -> np.ndarray:
        try:
            return self.labels[index]
        except Exception as exc:
            raise BigquantError(
                f"{self.path}: corrupt store (cannot read labels: {type(exc).__name__}: {exc})"
            ) from None


def open_store(path) -> Store:
    """Open a complete bigquant store for reading; reads its metadata only.

    Parameters
    ----------
    path : path-like or URL
        The store: a local directory or an fsspec URL (``s3://…``).

    Returns
    -------
    Store
        The opened store; its labels are read only when used. For the
        format it checks, see the store format specification in the
        documentation (docs/store.md).

    Raises
    ------
    BigquantError
        For anything that is not a complete store this version reads: a
        missing path, a plain Zarr array, a store whose run never completed,
        a newer store format, any value of its metadata or codebook that no
        run writes (the message names the field), label chunks missing.
        Labels past the codebook are caught only when the labels are read.

    Examples
    --------
    >>> import bigquant
    >>> store = bigquant.open_store("scan.zarr")  # doctest: +SKIP
    >>> store.meta.n_colors, store.meta.psnr  # doctest: +SKIP
    (256, 38.2)
    """
    import zarr

    path = location.normalize(path)
    if not location.exists(path):
        raise BigquantError(f"{path}: no such file or directory")
    try:
        group = zarr.open_group(location.zarr_store(path, read_only=True), mode="r")
    except Exception:
        raise BigquantError(f"{path}: not a bigquant store (not a Zarr group)") from None
    attrs = group.attrs.get(ATTR_KEY)
    if not isinstance(attrs, dict) or CODEBOOK_KEY not in group.attrs or LABELS_KEY not in group:
        raise BigquantError(f"{path}: not a bigquant store (no labels or codebook)")
    if not attrs.get("complete"):
        raise BigquantError(
            f"{path}: incomplete bigquant store (the run that wrote it did not finish)"
        )
    version = attrs.get("format_version", 0)
    if not _is_int(version):
        raise BigquantError(f"{path}: corrupt store (format_version {version!r} is not a number)")
    if version > FORMAT_VERSION:
        raise BigquantError(
            f"{path}: store format {version} is newer than this bigquant reads "
            f"({FORMAT_VERSION}); upgrade bigquant"
        )
    try:
        meta = StoreMeta.from_attrs(attrs)
    except (KeyError, TypeError, ValueError):
        raise BigquantError(f"{path}: corrupt store (malformed metadata)") from None
    labels = group[LABELS_KEY]
    try:
        codebook = _check_meta(meta, group.attrs[CODEBOOK_KEY], labels)
    except _Invalid as exc:
        raise BigquantError(f"{path}: corrupt store ({exc})") from None
    # Every label chunk is written, even an all-zero one: a missing chunk is lost data, which
    # zarr would read back as label 0.
    if labels.nchunks_initialized < labels.nchunks:
        raise BigquantError(
            f"{path}: corrupt store ({labels.nchunks - labels.nchunks_initialized} of "
            f"{labels.nchunks} label chunks missing)"
        )
    return Store(path, labels, codebook, meta)


class _Invalid(ValueError):
    """A value of a store's metadata that no run writes: the message names the field."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite JSON number (JSON has no NaN or infinity; Python's json reads them anyway)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, field: str, why: str) -> None:
    if not ok:
        raise _Invalid(f"{field} {why}")


def _check_meta(meta: StoreMeta, codebook, labels) -> np.ndarray:
    """Check every value of a store's metadata against the others and the labels array.

    Returns the codebook as an array of the source's dtype. Raises `_Invalid`,
    naming the field, for a value no run writes: what a hand-edited or forged
    store holds, which would otherwise fail deep inside a command.
    """
    source = meta.source
    _check_source(source, labels)
    shape, nodata = source.shape, source.nodata
    dtype = np.dtype(source.dtype)
    for field in ("n_colors_requested", "n_colors", "seed", "sample_size", "n_iter"):
        value = getattr(meta, field)
        _require(_is_int(value) and value >= 0, field, f"is {value!r}, not a whole number")
    _require(meta.max_iter is None or _is_int(meta.max_iter), "max_iter", "is not a number")
    _require(meta.n_colors >= 1, "n_colors", "is 0")
    n_rows = meta.n_colors + (meta.nodata_label is not None)
    _require(
        meta.nodata_label is None or meta.nodata_label == meta.n_colors,
        "nodata_label",
        f"is {meta.nodata_label!r}: the codebook's last row, {meta.n_colors}, or none",
    )
    _require(
        (meta.nodata_label is None) == (nodata is None),
        "nodata_label",
        "and source.nodata disagree",
    )
    _require(meta.space in defaults.SPACES, "space", f"is {meta.space!r}")
    _require(meta.dither is None or meta.dither in defaults.DITHERS, "dither", "is unknown")
    _require(isinstance(meta.run, dict), "run", "is not a set of parameters")
    _check_quality(meta, n_rows, shape[0] * shape[1])
    return _checked_codebook(codebook, dtype, shape[2], n_rows, meta.nodata_label)


def _check_quality(meta: StoreMeta, n_rows: int, n_pixels: int) -> None:
    """The fields a run adds as it finishes, and where its codebook came from."""
    origin = meta.codebook_from
    _require(origin is None or _origin_ok(origin), "codebook_from", f"is {origin!r}")
    _require(_is_number(meta.mse) and meta.mse >= 0, "mse", f"is {meta.mse!r}")
    _require(meta.psnr is None or _is_number(meta.psnr), "psnr", f"is {meta.psnr!r}")
    _require(
        meta.delta_e is None or (_is_number(meta.delta_e) and meta.delta_e >= 0),
        "delta_e",
        f"is {meta.delta_e!r}",
    )
    counts = meta.counts
    _require(
        counts is None
        or (
            isinstance(counts, list)
            and len(counts) == n_rows
            and all(_is_int(n) and n >= 0 for n in counts)
            and sum(counts) == n_pixels
        ),
        "counts",
        f"are not {n_rows} pixel counts adding up to the image's {n_pixels}",
    )
    _require(
        meta.pyramid is None
        or (
            isinstance(meta.pyramid, list) and all(isinstance(level, str) for level in meta.pyramid)
        ),
        "pyramid",
        "is not a list of label levels",
    )


def _origin_ok(origin) -> bool:
    """Whether ``codebook_from`` is what `origin_text` and ``bigquant info`` can tell."""
    if not isinstance(origin, dict) or not isinstance(origin.get("kind"), str):
        return False
    if origin["kind"] != "collection":
        return isinstance(origin.get("path", ""), (str, type(None)))
    return isinstance(origin.get("paths"), list) and all(
        _is_int(origin.get(k)) for k in ("n_colors_requested", "sample_size", "n_iter")
    )


def _checked_codebook(
    rows, dtype: np.dtype, n_channels: int, n_rows: int, nodata_label
) -> np.ndarray:
    """The codebook attribute as an array of ``dtype``: ``n_rows`` rows of ``n_channels``
    values that ``dtype`` holds exactly; null (NaN) only in a float image's nodata row."""
    _require(
        isinstance(rows, list)
        and len(rows) == n_rows
        and all(isinstance(row, list) and len(row) == n_channels for row in rows),
        "codebook",
        f"is not {n_rows} rows of {n_channels} values",
    )
    for i, row in enumerate(rows):
        for value in row:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                _require(dtype.kind == "f" and i == nodata_label, "codebook", f"row {i} holds NaN")
                continue
            _require(_is_number(value), "codebook", f"row {i} holds {value!r}")
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                _require(
                    value == int(value) and info.min <= value <= info.max,
                    "codebook",
                    f"row {i} holds {value!r}, not a {dtype} value",
                )
            else:
                _require(
                    abs(value) <= np.finfo(dtype).max,
                    "codebook",
                    f"row {i} holds {value!r}, past {dtype}'s range",
                )
    return np.asarray([[np.nan if v is None else v for v in row] for row in rows], dtype=dtype)


def _check_source(source: SourceInfo, labels) -> None:
    """The image the store says it was made from, against its labels array."""
    shape = source.shape
    _require(
        isinstance(shape, list) and len(shape) == 3 and all(_is_int(n) and n > 0 for n in shape),
        "source.shape",
        f"is {shape!r}, not [rows, columns, channels]",
    )
    dtype = np.dtype(source.dtype)
    _require(dtype.kind in "uif", "source.dtype", f"{source.dtype} is not a pixel type")
    _require(
        hasattr(labels, "shape") and tuple(labels.shape) == tuple(shape[:2]),
        "labels",
        f"have shape {getattr(labels, 'shape', None)}, source.shape says {shape[:2]}",
    )
    _require(
        np.issubdtype(labels.dtype, np.unsignedinteger),
        "labels",
        f"are {labels.dtype}, not unsigned",
    )
    for field in ("photometric", "converted"):
        value = getattr(source, field)
        _require(value is None or isinstance(value, str), f"source.{field}", f"is {value!r}")
    _require(source.path is None or isinstance(source.path, str), "source.path", "is not a path")
    _check_scale(source)
    _require(
        isinstance(source.extrasamples, list)
        and len(source.extrasamples) < shape[2]
        and all(_is_int(code) and code in (0, 1, 2) for code in source.extrasamples),
        "source.extrasamples",
        f"is {source.extrasamples!r}",
    )
    bits = source.bits
    _require(
        bits is None or (_is_int(bits) and dtype.kind in "iu" and 1 <= bits <= 8 * dtype.itemsize),
        "source.bits",
        f"is {bits!r} for {dtype} pixels",
    )
    _require(
        _is_int(source.orientation) and 1 <= source.orientation <= 8,
        "source.orientation",
        f"is {source.orientation!r}, not 1 to 8",
    )
    nodata = source.nodata
    _require(
        nodata is None or _is_number(nodata) or (nodata == "nan" and dtype.kind == "f"),
        "source.nodata",
        f"is {nodata!r}",
    )


def _check_scale(source: SourceInfo) -> None:
    """Where the pixels are: GeoTIFF tags, or a physical pixel size, written into TIFF outputs."""
    _require(
        source.geotiff is None
        or (
            isinstance(source.geotiff, dict)
            and all(
                isinstance(tag, dict) and _is_int(tag.get("type")) and _is_int(tag.get("count"))
                for tag in source.geotiff.values()
            )
        ),
        "source.geotiff",
        "is not a set of TIFF tags",
    )
    size = source.pixel_size
    _require(
        size is None
        or (
            isinstance(size, dict)
            and all(_is_number(size.get(k)) and size[k] > 0 for k in "yx")
            and size.get("unit") in CENTIMETRES
        ),
        "source.pixel_size",
        f"is {size!r}",
    )
