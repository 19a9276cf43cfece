"""Pyramid levels: a 2x2 mode of real labels on any chunking, readable by ome-zarr-py."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from conftest import cli, made_up_meta, write_tiff
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from zarr.errors import ContainsArrayError

import bigquant
from bigquant.kernels.downsample import mode_2x2
from bigquant.pyramid import pyramid_levels, write_pyramid
from bigquant.store import create_store


def reference_mode(labels: np.ndarray) -> np.ndarray:
    """One 2x2 cell at a time: the most frequent value, a two-two tie to the smaller one,
    the top-left value when all four differ; odd edges replicated."""
    h, w = labels.shape
    padded = np.pad(labels, ((0, h % 2), (0, w % 2)), mode="edge")
    out = np.empty((padded.shape[0] // 2, padded.shape[1] // 2), labels.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            cell = padded[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].ravel().tolist()
            counts = Counter(cell)
            top = max(counts.values())
            out[i, j] = cell[0] if top == 1 else min(v for v, n in counts.items() if n == top)
    return out


def photo_labels(image: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels of a photograph quantized to ``levels`` steps per channel, and their codebook."""
    step = 256 // levels
    k = levels**3
    idx = (image // step).astype(np.int64) @ np.array([levels * levels, levels, 1])
    grid = np.array(
        [[(i // (levels * levels)), (i // levels) % levels, i % levels] for i in range(k)]
    )
    dtype = np.uint8 if k <= 256 else np.uint16
    codebook = (grid * step + step // 2).astype(np.uint8)
    return idx.astype(dtype), codebook


def make_store(path, labels: np.ndarray, codebook: np.ndarray, chunks, zarr_format: int):
    partial = create_store(
        str(path), chunks, codebook, made_up_meta(labels.shape, codebook), zarr_format=zarr_format
    )
    partial.labels[:] = labels
    return partial.group


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([np.uint8, np.uint16]).flatmap(
        lambda dtype: hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9),
            # Few values (ties of every kind), and uint16 labels past 256.
            elements=st.sampled_from([0, 1, 2, 3] if dtype == np.uint8 else [0, 3, 300, 65535]),
        )
    )
)
def test_mode_matches_reference_on_any_shape(block):
    got = mode_2x2(block)
    assert got.dtype == block.dtype
    np.testing.assert_array_equal(got, reference_mode(block))
    # Every output is one of its own cell's (unpadded) pixels.
    for (i, j), value in np.ndenumerate(got):
        assert value in block[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]


@pytest.mark.parametrize(
    ("crop", "chunks", "zarr_format"),
    [
        ((181, 263), (37, 53), 3),
        ((181, 263), (37, 53), 2),
        ((160, 127), (16, 16), 3),
        ((99, 200), (99, 7), 2),
    ],
)
def test_levels_equal_reference_pyramid(tmp_path, china, crop, chunks, zarr_format):
    labels, codebook = photo_labels(china[40 : 40 + crop[0], 100 : 100 + crop[1]], 4)
    group = make_store(tmp_path / "s.zarr", labels, codebook, chunks, zarr_format)
    paths = write_pyramid(group, codebook)
    assert paths[0] == "labels" and len(paths) > 1
    expected = labels
    for path in paths[1:]:
        expected = reference_mode(expected)
        level = group[path]
        assert level.chunks == chunks and level.dtype == labels.dtype
        np.testing.assert_array_equal(level[:], expected)
    last = group[paths[-1]].shape
    assert last[0] <= chunks[0] and last[1] <= chunks[1]
    assert pyramid_levels(group) == paths


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_whole_photo_levels_are_ceil_halved_labels(tmp_path, astronaut, zarr_format):
    # 16 steps a channel: 4096 colours, so uint16 labels.
    labels, codebook = photo_labels(astronaut, 16)
    assert labels.dtype == np.uint16
    chunks = (45, 70)
    group = make_store(tmp_path / "s.zarr", labels, codebook, chunks, zarr_format)
    paths = write_pyramid(group, codebook, show_progress=True)
    present = set(np.unique(labels).tolist())
    shape = labels.shape
    for i, path in enumerate(paths[1:], start=1):
        level = group[path]
        shape = tuple(-(-n // 2) for n in shape)
        assert level.shape == shape and level.dtype == np.uint16
        assert set(np.unique(level[:]).tolist()) <= present
        if zarr_format == 3:
            assert level.metadata.dimension_names == (f"y_{i}", f"x_{i}")
    assert shape[0] <= chunks[0] and shape[1] <= chunks[1]
    before_last = group[paths[-2]].shape  # no level too many: the one before did not fit
    assert before_last[0] > chunks[0] or before_last[1] > chunks[1]


@pytest.mark.parametrize(
    ("shape", "n_levels"), [((64, 64), 1), ((64, 30), 1), ((65, 64), 2), ((129, 10), 3)]
)
def test_stops_once_a_level_fits_one_chunk(tmp_path, china, shape, n_levels):
    labels, codebook = photo_labels(china[: shape[0], : shape[1]], 4)
    group = make_store(tmp_path / "s.zarr", labels, codebook, (64, 64), 3)
    assert write_pyramid(group, codebook) == ["labels", "labels_1", "labels_2"][:n_levels]
    assert pyramid_levels(group) == ["labels", "labels_1", "labels_2"][:n_levels]


def test_no_pyramid_means_labels_alone(tmp_path, china):
    labels, codebook = photo_labels(china[:50, :50], 4)
    assert pyramid_levels(make_store(tmp_path / "s.zarr", labels, codebook, (16, 16), 3)) == [
        "labels"
    ]


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_ome_zarr_reads_the_store(tmp_path, china, zarr_format):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    labels, codebook = photo_labels(china, 4)
    path = tmp_path / "s.zarr"
    group = make_store(path, labels, codebook, (100, 150), zarr_format)
    paths = write_pyramid(group, codebook)

    nodes = list(Reader(parse_url(str(path)))())
    assert len(nodes) == 1  # the `labels` array is not mistaken for a labels group
    node = nodes[0]
    assert [a.shape for a in node.data] == [group[p].shape for p in paths]
    np.testing.assert_array_equal(node.data[-1].compute(), group[paths[-1]][:])
    assert [a["name"] for a in node.metadata["axes"]] == ["y", "x"]
    assert node.metadata["coordinateTransformations"][2] == [{"type": "scale", "scale": [4, 4]}]
    colors = node.metadata["color"]
    assert len(colors) == 64
    np.testing.assert_allclose(colors[37], [*(codebook[37] / 255), 1.0])


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_metadata_follows_the_spec_version(tmp_path, china, zarr_format):
    labels, codebook = photo_labels(china[:200, :200], 4)
    group = make_store(tmp_path / "s.zarr", labels, codebook, (64, 64), zarr_format)
    write_pyramid(group, codebook)
    attrs = group.attrs.asdict()
    if zarr_format == 3:
        from ome_zarr_models.v05.image import ImageAttrs
        from ome_zarr_models.v05.image_label import ImageLabelAttrs

        assert attrs["ome"]["version"] == "0.5" and "multiscales" not in attrs
        ome = attrs["ome"]
        assert "version" not in ome["multiscales"][0]
        # The metadata alone: the whole group fails on the `labels` array (see below).
        ImageAttrs.model_validate(ome)
        ImageLabelAttrs.model_validate(ome)
    else:
        from ome_zarr_models.v04.image import Image
        from ome_zarr_models.v04.image_label import ImageLabel

        assert "ome" not in attrs and attrs["multiscales"][0]["version"] == "0.4"
        ome = attrs
        assert ome["image-label"]["version"] == "0.4"
        del group["chunk_stats"]  # as a finished store
        Image.from_zarr(group)
        ImageLabel.from_zarr(group)
    (multiscale,) = ome["multiscales"]
    assert multiscale["axes"] == [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    assert [d["coordinateTransformations"] for d in multiscale["datasets"]] == [
        [{"type": "scale", "scale": [s, s]}] for s in (1, 2, 4)
    ]
    assert ome["image-label"]["colors"][5] == {"label-value": 5, "rgba": [*codebook[5], 255]}


@pytest.mark.xfail(
    strict=True,
    raises=ContainsArrayError,
    reason="OME-Zarr reserves the member name `labels` for a group of label images; "
    "ome-zarr-models' 0.5 validator rejects the store's `labels` array (ome-zarr-py reads it)",
)
def test_v05_group_validator_and_the_labels_array(tmp_path, china):
    from ome_zarr_models.v05.image import Image

    labels, codebook = photo_labels(china[:100, :100], 4)
    group = make_store(tmp_path / "s.zarr", labels, codebook, (32, 32), 3)
    write_pyramid(group, codebook)
    del group["chunk_stats"]
    Image.from_zarr(group)


def test_codebook_colours_in_any_depth_grey_alpha_too_and_others_skipped(tmp_path, china):
    labels, codebook = photo_labels(china[:100, :100], 4)
    expected = [[*map(int, rgb), 255] for rgb in codebook]
    transparent_last = [*expected[:-1], [*expected[-1][:3], 0]]
    for name, other, colours, nodata in [
        ("uint16", codebook.astype(np.uint16) * 257, expected, None),
        ("float", codebook / 255.0, expected, None),
        ("grey", codebook[:, :1], [[int(v)] * 3 + [255] for v in codebook[:, 0]], None),
        (
            "grey+alpha",
            codebook[:, :2],
            [[int(g)] * 3 + [int(a)] for g, a in codebook[:, :2]],
            None,
        ),
        ("nodata", codebook, transparent_last, len(codebook) - 1),
        ("five", np.hstack([codebook, codebook[:, :2]]), None, None),
    ]:
        group = make_store(tmp_path / f"{name}.zarr", labels, other, (32, 32), 3)
        write_pyramid(group, other, nodata_label=nodata)
        found = group.attrs["ome"].get("image-label", {}).get("colors")
        assert (found and [c["rgba"] for c in found]) == colours, name


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_existing_attributes_survive(tmp_path, china, zarr_format):
    labels, codebook = photo_labels(china[:130, :140], 4)
    group = make_store(tmp_path / "s.zarr", labels, codebook, (32, 32), zarr_format)
    before = {k: group.attrs[k] for k in ("codebook", "bigquant")}
    first = write_pyramid(group, codebook)
    # Writing again (say, after an interrupted run) replaces the levels in place.
    assert write_pyramid(group, codebook) == first
    for key, value in before.items():
        assert group.attrs[key] == value
    np.testing.assert_array_equal(group["labels"][:], labels)


def test_compress_pyramid_end_to_end(tmp_path, astronaut):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    src = write_tiff(tmp_path / "a.tif", astronaut, tile=(64, 64))
    dst = tmp_path / "a.zarr"
    result = cli("compress", src, dst, "-c", 32, "--chunks", 128, "--pyramid", "-q")
    assert result.returncode == 0, result.stderr
    store = bigquant.open_store(dst)
    assert store.meta.pyramid == ["labels", "labels_1", "labels_2"]
    # Level 0 is the ordinary store; each level is the mode of the one before.
    group = zarr.open_group(dst, mode="r")
    assert group["labels_2"].shape == (128, 128)
    np.testing.assert_array_equal(group["labels_1"][:], mode_2x2(store.labels[:]))
    np.testing.assert_array_equal(group["labels_2"][:], mode_2x2(group["labels_1"][:]))
    (node,) = Reader(parse_url(str(dst)))()
    assert [a.shape for a in node.data] == [(512, 512), (256, 256), (128, 128)]
    colors = node.metadata["color"]  # label value -> RGBA in [0, 1]
    shown = np.array([colors[i][:3] for i in range(len(store.codebook))]) * 255
    np.testing.assert_allclose(shown, store.codebook, atol=1e-9)
    info = cli("info", dst)
    assert "labels, labels_1, labels_2 (OME-Zarr multiscales)" in info.stdout


@pytest.mark.parametrize("pyramid", [False, True])
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_xarray_opens_every_store_with_named_dimensions(tmp_path, china, zarr_format, pyramid):
    import json

    import xarray as xr

    dst = tmp_path / "s.zarr"
    data = da.from_array(china, chunks=(128, 128, 3))
    bigquant.compress(data, dst, 8, zarr_format=zarr_format, pyramid=pyramid)
    ds = xr.open_zarr(dst, consolidated=False)
    group = zarr.open_group(dst, mode="r")
    assert ds["labels"].dims == ("y", "x")
    np.testing.assert_array_equal(ds["labels"].values, group["labels"][:])
    if pyramid:
        assert ds["labels_1"].dims == ("y_1", "x_1") and ds.sizes["y_1"] == 214
        np.testing.assert_array_equal(ds["labels_2"].values, group["labels_2"][:])
    if zarr_format == 2:
        # No fill value: GDAL would report it as NoData and hide every pixel of colour 0.
        for name in group.array_keys():
            assert json.loads((dst / name / ".zarray").read_text())["fill_value"] is None


@pytest.mark.skipif(not shutil.which("gdalinfo"), reason="GDAL's gdalinfo is not installed")
def test_gdal_sees_no_nodata_in_a_format_2_store(tmp_path, china):
    # GDAL 3.6 (Debian 12) reads Zarr format 2 only, and takes a fill value for NoData.
    dst = tmp_path / "s.zarr"
    bigquant.compress(da.from_array(china, chunks=(128, 128, 3)), dst, 8, zarr_format=2)
    out = subprocess.run(
        ["gdalinfo", "-stats", f'ZARR:"{dst}":/labels'], capture_output=True, text=True, check=True
    ).stdout
    assert "Size is 640, 427" in out and "NoData" not in out
    assert "STATISTICS_VALID_PERCENT=100" in out and "STATISTICS_MINIMUM=0" in out


def test_ome_tiff_pixel_size_scales_the_pyramid_and_the_tiff_output(tmp_path, china):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    src = tmp_path / "slide.ome.tif"
    ome = {"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm"}
    ome |= {"PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "µm"}
    tifffile.imwrite(src, china, photometric="rgb", tile=(128, 128), metadata=ome)
    dst = tmp_path / "s.zarr"
    assert cli("compress", src, dst, "-c", 8, "--chunks", 128, "--pyramid", "-q").returncode == 0
    (node,) = Reader(parse_url(str(dst)))()
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer", "micrometer"]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[0.5 * 2**i, 0.25 * 2**i] for i in range(len(scales))]
    assert cli("decompress", dst, tmp_path / "q.tif").returncode == 0
    with tifffile.TiffFile(tmp_path / "q.tif") as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert page.tags["XResolution"].value == (40000, 1)  # pixels per cm: 0.25 µm
        assert page.tags["YResolution"].value == (20000, 1)
