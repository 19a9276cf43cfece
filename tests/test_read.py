"""Read stage: every supported layout opens lazily and decodes to the original pixels."""

from __future__ import annotations

import os
import pickle

import dask
import numpy as np
import pytest
import tifffile
import zarr
from conftest import photo, write_tiff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bigquant.errors import BigquantError
from bigquant.read import DECODED, open_image


@pytest.mark.parametrize("compression", ["zlib", "lzw", "zstd", "none", "packbits"])
def test_tiled_compressions_round_trip(tmp_path, china, compression):
    path = write_tiff(tmp_path / "c.tif", china, compression=compression)
    image = open_image(path)
    assert image.data.shape == china.shape
    assert image.photometric == "rgb"
    np.testing.assert_array_equal(image.data.compute(), china)


def test_jpeg_tiff_decodes_to_rgb(tmp_path, china):
    path = write_tiff(tmp_path / "j.tif", china, compression="jpeg")
    image = open_image(path)
    assert image.photometric == "rgb"
    # Lossy, but the same picture.
    assert np.abs(image.data.compute().astype(int) - china).mean() < 5


def test_chunks_are_whole_tiles(tmp_path, astronaut):
    path = write_tiff(tmp_path / "a.tif", astronaut, tile=(64, 96))
    image = open_image(path, chunks=200)
    assert image.data.chunksize == (192, 192, 3)
    np.testing.assert_array_equal(image.data.compute(), astronaut)


def test_striped_chunks_span_full_width(tmp_path, china):
    path = write_tiff(tmp_path / "s.tif", china, tile=None, rowsperstrip=7)
    image = open_image(path, chunks=100)
    assert image.data.chunks[1] == (china.shape[1],)
    assert all(c % 7 == 0 for c in image.data.chunks[0][:-1])
    np.testing.assert_array_equal(image.data.compute(), china)


def test_big_endian_uint16(tmp_path, china):
    data = china.astype(np.uint16) * 257
    path = tmp_path / "be.tif"
    tifffile.imwrite(
        path, data, byteorder=">", tile=(64, 64), photometric="rgb", compression="zlib"
    )
    image = open_image(path)
    assert image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.data.compute(), data)


def test_bigtiff_and_planar(tmp_path, china):
    path = tmp_path / "p.tif"
    tifffile.imwrite(
        path,
        np.moveaxis(china, 2, 0),
        tile=(64, 64),
        planarconfig="separate",
        photometric="rgb",
        compression="zlib",
        bigtiff=True,
    )
    image = open_image(path)
    assert image.data.shape == china.shape
    np.testing.assert_array_equal(image.data.compute(), china)


def test_pyramidal_ome_tiff_reads_full_resolution(tmp_path, china):
    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(china, tile=(128, 128), photometric="rgb", subifds=1, compression="zlib")
        tw.write(
            china[::2, ::2], tile=(128, 128), photometric="rgb", subfiletype=1, compression="zlib"
        )
    np.testing.assert_array_equal(open_image(path).data.compute(), china)


def test_multipage_uses_first_plane_and_says_so(tmp_path, china, caplog):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, np.stack([china, china[::-1]]), photometric="rgb", tile=(128, 128))
    image = open_image(path)
    np.testing.assert_array_equal(image.data.compute(), china)
    assert "first" in caplog.text


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((70, 90), np.uint8),
        ((70, 90, 4), np.uint8),
        ((70, 90, 5), np.uint16),
        ((70, 90, 3), np.float32),
        ((70, 90, 1), np.uint16),
    ],
)
def test_channels_and_dtypes(tmp_path, shape, dtype):
    rng = np.random.default_rng(1)
    data = (rng.random(shape) * (1 if dtype == np.float32 else 200)).astype(dtype)
    path = write_tiff(tmp_path / "x.tif", data, tile=(32, 32))
    image = open_image(path)
    expected = data if data.ndim == 3 else data[:, :, None]
    assert image.data.dtype == dtype
    np.testing.assert_array_equal(image.data.compute(), expected)


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, np.uint32])
def test_unsupported_dtype_is_a_clear_error(tmp_path, dtype):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, np.zeros((8, 8), dtype))
    with pytest.raises(BigquantError, match=f"unsupported pixel type {np.dtype(dtype)}"):
        open_image(path)


def test_zarr_png_jpeg_sources(tmp_path, china):
    import imagecodecs

    zpath = tmp_path / "img.zarr"
    z = zarr.create_array(zpath, shape=china.shape, chunks=(100, 100, 3), dtype=china.dtype)
    z[:] = china
    image = open_image(zpath, chunks=250)
    assert image.data.chunksize[:2] == (200, 200)
    np.testing.assert_array_equal(image.data.compute(), china)

    (tmp_path / "img.png").write_bytes(imagecodecs.png_encode(china))
    np.testing.assert_array_equal(open_image(tmp_path / "img.png").data.compute(), china)
    (tmp_path / "img.jpg").write_bytes(imagecodecs.jpeg8_encode(china, level=95))
    assert open_image(tmp_path / "img.jpg").data.shape == china.shape


def test_tasks_pickle_without_open_file_handles(china_tif):
    # A process-based worker receives the graph pickled: it must carry a path, not a store.
    data = open_image(china_tif).data
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone.compute(scheduler="sync"), data.compute())


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tile=st.sampled_from([16, 32, 48]),
    target=st.integers(1, 300),
    striped=st.booleans(),
    rows=st.integers(1, 40),
)
def test_any_chunking_reads_the_same_pixels(tmp_path_factory, tile, target, striped, rows):
    image = photo("chelsea")[:123, :157]
    path = tmp_path_factory.mktemp("h") / "h.tif"
    if striped:
        write_tiff(path, image, tile=None, rowsperstrip=rows)
    else:
        write_tiff(path, image, tile=(tile, tile))
    data = open_image(path, chunks=target).data
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(data.compute(), image)


def test_handle_cache_is_bounded_and_closes_what_it_evicts(tmp_path):
    from bigquant.location import HandleCache

    closed = []

    def opener(name):
        return lambda: (name, lambda: closed.append(name))

    cache = HandleCache(size=2)
    with cache.borrow(("a",), opener("a")) as a:
        assert a == "a"
        for name in "bcd":
            with cache.borrow((name,), opener(name)):
                pass
        # "a" is still in use: the oldest idle ones went, and were closed.
        assert closed == ["b", "c"] and len(cache) == 2
    with cache.borrow(("e",), opener("e")):
        pass
    assert closed == ["b", "c", "a"] and len(cache) == 2
    with cache.borrow(("d",), opener("x")) as again:  # still open: not opened a second time
        assert again == "d"


def test_reading_many_files_keeps_a_bounded_number_open(tmp_path):
    import psutil

    from bigquant.read.tiff import HANDLES as _handles

    for i in range(_handles.size + 8):
        path = write_tiff(tmp_path / f"{i}.tif", np.full((40, 30, 3), i, np.uint8), tile=(16, 16))
        assert int(open_image(path).data.max().compute()) == i
    assert len(_handles) <= _handles.size
    mine = [f for f in psutil.Process().open_files() if f.path.startswith(str(tmp_path))]
    assert 0 < len(mine) <= _handles.size


def test_kept_tiles_are_taken_once_within_budget(tmp_path, china):
    """While `DECODED` keeps a file's tiles, a read keeps what it decodes (up to the budget)
    and the next read that needs a tile takes it; the pixels are the file's either way."""
    path = str(write_tiff(tmp_path / "china.tif", china, tile=(64, 64)))
    image = open_image(path, chunks=128)
    tile_bytes = 64 * 64 * 3
    with DECODED.keeping(path, 5 * tile_bytes) as stop:
        part = image.data[:128, :256].compute()  # 2 x 4 tiles decoded, 5 of them kept
        assert len(DECODED) == 5
        stop()
        whole = image.data.compute()  # takes the 5, decodes the rest and keeps none
        assert len(DECODED) == 0
    np.testing.assert_array_equal(part, china[:128, :256])
    np.testing.assert_array_equal(whole, china)


def test_a_second_run_on_a_kept_file_shares_its_tiles(tmp_path, china):
    """Two runs on one file in one process: the second keeps nothing of its own, and neither
    its stop nor its end takes the first run's tiles away."""
    path = str(write_tiff(tmp_path / "china.tif", china, tile=(64, 64)))
    image = open_image(path, chunks=128)
    with DECODED.keeping(path, 1 << 30) as stop:
        with DECODED.keeping(path, 1 << 30) as second_stop:
            image.data[:128, :256].compute()
            second_stop()
            image.data[128:256, :256].compute()
            assert len(DECODED) == 16
        assert len(DECODED) == 16
        stop()
        np.testing.assert_array_equal(image.data.compute(), china)
        assert len(DECODED) == 0
    stop()  # after the block: changes nothing
    image.data.compute()
    assert len(DECODED) == 0


def test_kept_tiles_of_a_changed_file_are_not_used(tmp_path, china):
    path = str(write_tiff(tmp_path / "china.tif", china, tile=(64, 64)))
    other = write_tiff(tmp_path / "other.tif", china, tile=(64, 64))
    with DECODED.keeping(path, 1 << 30):
        open_image(other).data.compute()  # another file's tiles are not kept
        assert len(DECODED) == 0
        open_image(path).data.compute()
        assert len(DECODED) == 70
        stamp = os.stat(path).st_mtime_ns
        write_tiff(path, china[::-1], tile=(64, 64))
        os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
        np.testing.assert_array_equal(open_image(path).data.compute(), china[::-1])
    assert len(DECODED) == 0  # what no read took is dropped with the block
