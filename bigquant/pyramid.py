"""Downsampled label levels and OME-Zarr metadata, so OME-Zarr viewers open a store.

Each level halves both axes of the one before by a 2x2 mode filter, so every
pixel is a palette index that occurs in its block: averaging indices would
invent colours. Levels sit beside ``labels`` in the same group::

    labels, labels_1, labels_2, ...     level 0 (the store contract), then halvings

Dataset paths are arbitrary in OME-NGFF (0.5, "Images" layout: "The name of
the array is arbitrary with the ordering defined by the multiscales metadata";
the 0.4 schema takes any string). Level 0 must stay ``labels`` for the store
contract, so plain ``0``, ``1``, ... would mix two schemes; ``labels_N`` keeps
them together. Zarr format 3 stores get OME-NGFF 0.5 metadata (all under
``attrs["ome"]``), format 2 stores 0.4 (top-level ``multiscales`` and
``image-label``).

Caveat: OME-Zarr also uses the member name ``labels`` for a *group* of label
images. ome-zarr-py skips our array there, but strict validators (ome-zarr-models'
0.5 ``Image``) reject the group for it.
"""

from __future__ import annotations

import dask
import numpy as np

from .kernels.color import to_8bit
from .kernels.downsample import mode_2x2
from .progress import compute, progress
from .store import create_label_array

LEVEL0 = "labels"
AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def level_name(level: int) -> str:
    """Array name of pyramid level ``level``: ``labels``, ``labels_1``, ``labels_2``, ..."""
    return LEVEL0 if level == 0 else f"{LEVEL0}_{level}"


#: Smallest chunk side of a level made several halvings at once (`halve`'s ``times``).
_SMALLEST_CHUNK = 256


def _mode_write(src, out, row: int, col: int, times: int, stop=None) -> None:
    """Write chunk ``(row, col)`` of ``out``: the source pixels it covers, halved ``times``
    times by the 2x2 mode."""
    if stop is not None and stop.is_set():
        return
    (cy, cx), f = out.chunks, 1 << times
    block = src[f * row * cy : f * (row + 1) * cy, f * col * cx : f * (col + 1) * cx]
    for _ in range(times):
        block = mode_2x2(block)
    out[row * cy : row * cy + block.shape[0], col * cx : col * cx + block.shape[1]] = block


def halve(src, group, target: str, nodata: int | None, stop=None, times: int = 1):
    """Write array ``target`` of ``group`` as the Zarr array ``src`` halved ``times`` times
    by the 2x2 mode, one Zarr chunk per task; return it.

    The labels are those of halving one level at a time (each task's pixels start on a
    multiple of ``2**times``). The target's chunks are ``src``'s, or past one halving
    ``src``'s halved ``times - 1`` times (at least `_SMALLEST_CHUNK`): a task reads
    ``2**times`` of them across and down, 2 x 2 of ``src``'s chunks when those are 1024 or
    more pixels a side (more, smaller ones below that). ``nodata``: the nodata label, the
    fill value as level 0's. ``stop``, a `threading.Event` (local threads only), once set
    leaves the chunks of the tasks that have not started unwritten: the level is then
    incomplete."""
    f = 1 << times
    shape = (-(-src.shape[0] // f), -(-src.shape[1] // f))
    chunks = tuple(min(c, max(c >> (times - 1), _SMALLEST_CHUNK)) for c in src.chunks)
    # Dimensions of their own: xarray opens the group as one dataset, and a level's y is not
    # level 0's.
    dims = (f"y_{target.rsplit('_', 1)[1]}", f"x_{target.rsplit('_', 1)[1]}")
    dst = create_label_array(group, target, shape, chunks, src.dtype, dims, nodata=nodata)
    # Each task writes exactly one chunk of the target, so no two write the same Zarr chunk.
    # (Still one dask.delayed call per chunk: the label pass plans in one blockwise layer,
    # see `bigquant.write.label_writes`.) Reading in the task, not through dask.array, keeps
    # dask.array's imports out of `bigquant tiles`.
    write = dask.delayed(_mode_write, pure=False)
    rows, cols = -(-shape[0] // chunks[0]), -(-shape[1] // chunks[1])
    compute(*(write(src, dst, r, c, times, stop) for r in range(rows) for c in range(cols)))
    return dst


def _colors(
    codebook: np.ndarray, peak: float | None = None, nodata_label: int | None = None
) -> list[dict] | None:
    """``image-label`` colours of a grey or RGB codebook (with or without alpha), else None.

    Grey values become grey colours, alpha the colours' opacity; the nodata
    label is transparent. Other channel counts have no colour a viewer would show.
    """
    codebook = np.asarray(codebook)
    if codebook.ndim != 2 or codebook.shape[1] not in (1, 2, 3, 4):
        return None
    values = to_8bit(codebook, codebook.dtype, peak)
    grey = codebook.shape[1] <= 2
    rgb = np.repeat(values[:, :1], 3, axis=1) if grey else values[:, :3]
    alpha = values[:, -1] if codebook.shape[1] in (2, 4) else np.full(len(values), 255)
    if nodata_label is not None:
        alpha[nodata_label] = 0
    return [
        {"label-value": i, "rgba": [*map(int, c), int(a)]}
        for i, (c, a) in enumerate(zip(rgb, alpha, strict=True))
    ]


def write_pyramid(
    group,
    codebook: np.ndarray,
    *,
    pixel_size: dict | None = None,
    nodata_label: int | None = None,
    peak: float | None = None,
    show_progress: bool = False,
) -> list[str]:
    """Write halved label levels beside ``labels`` and the OME-Zarr metadata describing them.

    Parameters
    ----------
    group : zarr.Group
        An open, writable store group (Zarr format 2 or 3) holding the ``labels`` array.
    codebook : ndarray, shape (K, C)
        The palette; a grey or RGB one also becomes the ``image-label`` colours.
    pixel_size : dict, optional
        ``{"y", "x", "unit"}``: level 0's physical pixel size, which scales every
        level and gives the axes their unit; without it the scales count pixels.
    nodata_label : int, optional
        The label of pixels without data: transparent in ``image-label``.
    peak : float, optional
        The largest value of integer pixels, for the colours (12-bit data: 4095).
    show_progress : bool
        Draw a progress bar for each level.

    Returns
    -------
    list of str
        The dataset paths, level 0 (``labels``) first.

    Notes
    -----
    Levels are written until one fits in a single chunk, each computed chunk by
    chunk from the level stored before it, so no level is ever held in memory.
    Existing attributes are kept; only the OME-Zarr keys are (re)written.
    """
    cy, cx = group[LEVEL0].chunks
    h, w = group[LEVEL0].shape
    paths = [LEVEL0]
    while h > cy or w > cx:
        name = level_name(len(paths))
        with progress(f"pyramid level {len(paths)}", show_progress):
            h, w = halve(group[paths[-1]], group, name, nodata_label).shape
        paths.append(name)

    size = pixel_size or {"y": 1, "x": 1}
    axes = [{**a, "unit": size["unit"]} for a in AXES] if pixel_size else AXES
    multiscale = {
        "name": LEVEL0,
        "axes": axes,
        "datasets": [
            {
                "path": p,
                "coordinateTransformations": [
                    {"type": "scale", "scale": [size["y"] * 2**i, size["x"] * 2**i]}
                ],
            }
            for i, p in enumerate(paths)
        ],
        "type": "mode",
        "metadata": {"description": "2x2 mode of the level before: every value is a label"},
    }
    colors = _colors(codebook, peak, nodata_label)
    if group.metadata.zarr_format == 3:
        ome = {**group.attrs.get("ome", {}), "version": "0.5", "multiscales": [multiscale]}
        if colors is not None:
            ome["image-label"] = {"colors": colors}
        group.attrs["ome"] = ome
    else:
        group.attrs["multiscales"] = [{**multiscale, "version": "0.4"}]
        if colors is not None:
            group.attrs["image-label"] = {"version": "0.4", "colors": colors}
    return paths


def pyramid_levels(group) -> list[str]:
    """Dataset paths of a store's OME-Zarr multiscales, level 0 first; ``["labels"]`` if none."""
    attrs = group.attrs.asdict()
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        return [LEVEL0]
    return [d["path"] for d in multiscales[0]["datasets"]]
