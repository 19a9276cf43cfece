"""compress → store → decompress on real photographs, against in-memory references."""

from __future__ import annotations

import json

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from conftest import photo, write_tiff
from sklearn.cluster import KMeans

import bigquant
from bigquant.errors import BigquantError
from bigquant.read import DECODED, open_image


def store_image(path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(codebook, labels, meta) read straight from the store, as any other tool would."""
    group = zarr.open_group(path, mode="r")
    meta = group.attrs["bigquant"]
    return (
        np.asarray(group.attrs["codebook"], dtype=meta["source"]["dtype"]),
        group["labels"][:],
        meta,
    )


def psnr_of(image: np.ndarray, codebook: np.ndarray) -> float:
    from bigquant.kernels.nearest import nearest

    px = image.reshape(-1, image.shape[-1])
    _, sq = nearest(px, codebook)
    return 10 * np.log10(255.0**2 / (sq.sum() / px.size))


@pytest.mark.parametrize("name", ["china", "astronaut"])
def test_default_quality_within_0_2_db_of_full_data_sklearn(tmp_path, name):
    image = photo(name)
    src = write_tiff(tmp_path / "in.tif", image)
    meta = bigquant.compress(src, tmp_path / "out.zarr", 64)
    # 3 inits: within 0.01 dB of 10 on these photos, at a third of the time.
    reference = KMeans(n_clusters=64, n_init=3, random_state=0).fit(
        image.reshape(-1, 3).astype(np.float64)
    )
    ref_codebook = np.clip(np.rint(reference.cluster_centers_), 0, 255).astype(np.uint8)
    assert meta.n_colors == 64
    assert meta.psnr >= psnr_of(image, ref_codebook) - 0.2


def test_store_contract(tmp_path, china):
    src = write_tiff(tmp_path / "in.tif", china, tile=(64, 128))
    meta = bigquant.compress(src, tmp_path / "s.zarr", 32, chunks=200, sample_size=50_000)
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    labels = group["labels"]
    assert labels.shape == china.shape[:2] and labels.dtype == np.uint8
    assert labels.chunks == (192, 128)
    codebook = group.attrs["codebook"]
    assert len(codebook) == 32 and all(len(row) == 3 for row in codebook)
    assert all(isinstance(v, int) and 0 <= v <= 255 for row in codebook for v in row)
    stored = group.attrs["bigquant"]
    assert stored == json.loads(json.dumps(meta.to_attrs()))
    assert stored["complete"] is True
    assert stored["source"] == {
        "path": str(src),
        "shape": [427, 640, 3],
        "dtype": "uint8",
        "photometric": "rgb",
        "geotiff": None,
        "pixel_size": None,
        "extrasamples": [],
        "bits": 8,
        "orientation": 1,
        "nodata": None,
        "converted": None,
    }
    assert stored["nodata_label"] is None
    assert (stored["n_colors_requested"], stored["n_colors"], stored["seed"]) == (32, 32, 0)
    assert stored["sample_size"] == 50_000 and stored["n_iter"] >= 1
    # The MSE in the store is the real full-image error of codebook[labels].
    quantized = np.asarray(codebook, np.uint8)[labels[:]]
    mse = ((quantized.astype(float) - china) ** 2).mean()
    assert stored["mse"] == pytest.approx(mse, rel=1e-12)
    assert stored["psnr"] == pytest.approx(10 * np.log10(255**2 / mse))
    assert sum(stored["counts"]) == china.shape[0] * china.shape[1]
    # Every label is the exact nearest codebook colour.
    from bigquant.kernels.nearest import nearest

    expected, _ = nearest(china.reshape(-1, 3), np.asarray(codebook, np.uint8))
    np.testing.assert_array_equal(labels[:].ravel(), expected)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_decompress_equals_codebook_of_labels(tmp_path, astronaut, suffix):
    src = write_tiff(tmp_path / "in.tif", astronaut[:500, :470], tile=(80, 96))
    bigquant.compress(src, tmp_path / "s.zarr", 48, chunks=300)
    out = bigquant.decompress(tmp_path / "s.zarr", tmp_path / f"out{suffix}")
    codebook, labels, _ = store_image(tmp_path / "s.zarr")
    if suffix == ".tif":
        with tifffile.TiffFile(out) as tif:
            page = tif.pages[0]
            assert page.is_tiled and page.photometric.name == "RGB"
            assert page.compression.name in ("ADOBE_DEFLATE", "DEFLATE")
            result = tif.asarray()
    else:
        result = zarr.open_array(out, mode="r")[:]
    np.testing.assert_array_equal(result, codebook[labels])


def test_zarr_format_2_store(tmp_path, china):
    bigquant.compress(write_tiff(tmp_path / "in.tif", china), tmp_path / "s.zarr", 8, zarr_format=2)
    group = zarr.open_group(tmp_path / "s.zarr", mode="r", zarr_format=2)
    assert group["labels"].dtype == np.uint8 and group.attrs["bigquant"]["complete"]
    assert bigquant.open_store(tmp_path / "s.zarr").codebook.shape == (8, 3)


def test_same_seed_same_result_on_any_chunking_and_thread_count(tmp_path, china):
    tiled = write_tiff(tmp_path / "t.tif", china, tile=(64, 64))
    striped = write_tiff(tmp_path / "s.tif", china, tile=None, rowsperstrip=9)
    runs = []
    for i, (src, chunks, workers) in enumerate(
        [(tiled, 64, 1), (tiled, 320, 4), (striped, 100, 2), (striped, None, 3)]
    ):
        with dask.config.set(scheduler="threads", num_workers=workers):
            bigquant.compress(
                src, tmp_path / f"r{i}.zarr", 24, sample_size=40_000, seed=11, chunks=chunks
            )
        runs.append(store_image(tmp_path / f"r{i}.zarr"))
    for codebook, labels, meta in runs[1:]:
        np.testing.assert_array_equal(codebook, runs[0][0])
        np.testing.assert_array_equal(labels, runs[0][1])
        assert meta["mse"] == runs[0][2]["mse"]


def _synthetic(kind: str) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    if kind == "one-colour":
        return np.full((45, 77, 3), (12, 200, 99), np.uint8), {}
    if kind == "few-colours":
        palette = np.array([[0, 0, 0], [255, 255, 255], [200, 10, 10]], np.uint8)
        return palette[rng.integers(0, 3, (70, 50))], {}
    if kind == "uint16":
        return (photo("coffee")[:150, :130].astype(np.uint16) * 257), {}
    if kind == "float32":
        return (photo("chelsea")[:140, :150] / 255).astype(np.float32), {}
    if kind == "rgba":
        rgb = photo("rocket")[:130, :170]
        return np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)]), {
            "photometric": "rgb",
            "extrasamples": ["unassalpha"],
        }
    if kind == "one-band":
        return photo("camera")[:200, :150], {}
    if kind == "five-bands":
        rgb = photo("chelsea")[:100, :120]
        return np.dstack([rgb, rgb[..., :2] // 2]), {}
    if kind == "planar":
        return photo("coffee")[:101, :99], {"planarconfig": "separate"}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["one-colour", "few-colours", "uint16", "float32", "rgba", "one-band", "five-bands", "planar"],
)
def test_edge_cases_round_trip(tmp_path, kind):
    image, kwargs = _synthetic(kind)
    if kwargs.get("planarconfig") == "separate":
        src = tmp_path / "in.tif"
        tifffile.imwrite(
            src,
            np.moveaxis(image, 2, 0),
            photometric="rgb",
            tile=(32, 32),
            compression="zlib",
            **kwargs,
        )
    else:
        src = write_tiff(tmp_path / "in.tif", image, tile=(32, 48), **kwargs)
    k = 5
    meta = bigquant.compress(src, tmp_path / "s.zarr", k, chunks=64)
    bigquant.decompress(tmp_path / "s.zarr", tmp_path / "out.tif")
    codebook, labels, _ = store_image(tmp_path / "s.zarr")
    channels = 1 if image.ndim == 2 else image.shape[2]
    assert codebook.shape[1] == channels and codebook.dtype == image.dtype
    expected = codebook[labels]
    result = tifffile.imread(tmp_path / "out.tif")
    np.testing.assert_array_equal(result, expected[:, :, 0] if channels == 1 else expected)
    distinct = len(np.unique(image.reshape(-1, channels), axis=0))
    assert meta.n_colors == min(k, distinct)
    if distinct <= k:
        # Fewer colours than K: exactly those colours, a lossless result.
        np.testing.assert_array_equal(result, image)
        assert meta.mse == 0 and meta.psnr is None


def test_python_api_on_a_dask_array(tmp_path, china):
    data = da.from_array(china, chunks=(100, 150, 3))
    fit = bigquant.fit_codebook(data, 16, seed=2)
    labels = bigquant.assign(data, fit.codebook)
    assert isinstance(labels, da.Array) and labels.chunks == data.chunks[:2]
    meta = bigquant.compress(data, tmp_path / "s.zarr", 16, seed=2)
    codebook, stored, _ = store_image(tmp_path / "s.zarr")
    np.testing.assert_array_equal(codebook, fit.codebook)
    np.testing.assert_array_equal(stored, labels.compute())
    assert meta.source.path is None


def test_computations_run_on_the_scheduler_the_user_configured(tmp_path, china):
    """dask's convention: a scheduler set with ``dask.config`` runs bigquant's work (here
    the synchronous one, the usual way to debug inside tasks), for the same store."""
    data = da.from_array(china, chunks=(100, 150, 3))
    codebook = bigquant.fit_codebook(data, 8, seed=1).codebook
    ran = []

    def synchronous(dsk, keys, **kwargs):
        ran.append(keys)
        return dask.local.get_sync(dsk, keys, **kwargs)

    bigquant.compress(data, tmp_path / "threads.zarr", codebook=codebook)
    with dask.config.set(scheduler=synchronous):
        bigquant.compress(data, tmp_path / "sync.zarr", codebook=codebook)
    # With the codebook given nothing is fitted: every computation is bigquant's own.
    assert ran
    np.testing.assert_array_equal(
        store_image(tmp_path / "sync.zarr")[1], store_image(tmp_path / "threads.zarr")[1]
    )


def test_existing_output_untouched_without_overwrite(tmp_path, china):
    src = write_tiff(tmp_path / "in.tif", china)
    dst = tmp_path / "s.zarr"
    dst.mkdir()
    (dst / "precious.txt").write_text("mine")
    with pytest.raises(BigquantError, match="already exists"):
        bigquant.compress(src, dst, 4)
    # Not even with `overwrite`: only a bigquant store is replaced.
    with pytest.raises(BigquantError, match=r"s.zarr is a folder holding precious.txt, not a"):
        bigquant.compress(src, dst, 4, overwrite=True)
    assert (dst / "precious.txt").read_text() == "mine"
    (dst / "precious.txt").unlink()
    bigquant.compress(src, dst, 4, overwrite=True)  # an empty folder holds nothing to lose
    bigquant.compress(src, dst, 3, overwrite=True)  # a store is replaced
    assert bigquant.open_store(dst).codebook.shape == (3, 3)


def test_failure_mid_write_keeps_old_output_and_the_partial_for_resume(
    tmp_path, china, monkeypatch
):
    src = write_tiff(tmp_path / "in.tif", china, tile=(64, 64))
    dst = tmp_path / "s.zarr"
    bigquant.compress(src, dst, 4)
    before = store_image(dst)

    from bigquant import write as write_stage

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    real = write_stage.label_chunk
    monkeypatch.setattr(write_stage, "label_chunk", failing)
    with pytest.raises(OSError, match="No space"):
        bigquant.compress(src, dst, 8, overwrite=True, chunks=64)
    after = store_image(dst)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    # The unfinished store is hidden, never mistaken for a complete one, and resumable.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.partial", "in.tif", "s.zarr"]
    with pytest.raises(BigquantError, match="incomplete bigquant store"):
        bigquant.open_store(tmp_path / ".s.zarr.partial")
    monkeypatch.setattr(write_stage, "label_chunk", real)
    bigquant.compress(src, dst, 8, overwrite=True, chunks=64, resume=True)
    bigquant.compress(src, tmp_path / "fresh.zarr", 8, chunks=64)
    resumed, fresh = store_image(dst), store_image(tmp_path / "fresh.zarr")
    np.testing.assert_array_equal(resumed[0], fresh[0])
    np.testing.assert_array_equal(resumed[1], fresh[1])
    assert resumed[2]["mse"] == fresh[2]["mse"]


def test_reader_layouts_give_identical_stores(tmp_path, china):
    # The same pixels behind different TIFF layouts quantize identically.
    a = write_tiff(tmp_path / "a.tif", china, tile=(128, 128), compression="lzw")
    b = write_tiff(tmp_path / "b.tif", china, tile=None, rowsperstrip=32, compression="zstd")
    for src in (a, b):
        assert open_image(src).data.shape == china.shape
        bigquant.compress(src, tmp_path / f"{src.stem}.zarr", 12, sample_size=30_000)
    ra, rb = store_image(tmp_path / "a.zarr"), store_image(tmp_path / "b.zarr")
    np.testing.assert_array_equal(ra[0], rb[0])
    np.testing.assert_array_equal(ra[1], rb[1])


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_same_labels_whatever_the_write_unit(tmp_path, china, monkeypatch, zarr_format):
    import bigquant.write as write_stage

    data = da.from_array(china, chunks=(64, 64, 3))  # 7 x 10 chunks, the edge ones cut
    kwargs = {"seed": 5, "zarr_format": zarr_format, "dither": "floyd-steinberg"}
    bigquant.compress(data, tmp_path / "one.zarr", 24, **kwargs)
    monkeypatch.setattr(write_stage, "UNIT_GROWS_AT", 4)  # 70 chunks: units of 4 x 4 chunks
    assert write_stage.write_unit(china.shape[:2], (64, 64)) == 4
    # Units stay within a chunk's memory bound: 2048² chunks of 4 x 16-bit grow to 2 x 2 only.
    assert write_stage.write_unit((2048 * 200, 2048 * 200), (2048, 2048), pixel_bytes=8) == 2
    bigquant.compress(data, tmp_path / "four.zarr", 24, **kwargs)
    one, four = (bigquant.open_store(tmp_path / n) for n in ("one.zarr", "four.zarr"))
    np.testing.assert_array_equal(four.labels[:], one.labels[:])
    assert four.meta == one.meta  # the stats too: summed per chunk in one order
    assert four.labels.chunks == (64, 64)  # readers still read small chunks
    if zarr_format == 3:  # a task writes one shard of 4 x 4 chunks
        assert four.labels.shards == (256, 256) and one.labels.shards is None
    else:  # a task writes 4 x 4 chunk files; format 2 has no shards (GDAL 3.6 reads it)
        assert (tmp_path / "four.zarr" / "labels" / "6.9").exists()


def test_label_pass_takes_the_tiles_the_sample_decoded(tmp_path, china, monkeypatch):
    """The sample of a file decodes every tile of a small image; the label pass takes them
    instead of decoding them again, and the store is the one the pixels in memory give."""
    src = write_tiff(tmp_path / "china.tif", china, tile=(64, 64))  # 7 x 10 tiles
    taken, take = [], DECODED.take
    decoded, offer = [], DECODED.offer

    def counting(*args):
        kept = take(*args)
        taken.append(len(kept))
        return kept

    def decoding(*args):  # every tile decoded is offered
        decoded.append(args[2])
        offer(*args)

    monkeypatch.setattr(DECODED, "take", counting)
    monkeypatch.setattr(DECODED, "offer", decoding)
    bigquant.compress(src, tmp_path / "file.zarr", 16, seed=3)
    assert sum(taken) == 70 and len(DECODED) == 0
    assert sorted(decoded) == list(range(70))  # each tile decoded once
    bigquant.compress(china, tmp_path / "memory.zarr", 16, seed=3)
    file, memory = store_image(tmp_path / "file.zarr"), store_image(tmp_path / "memory.zarr")
    np.testing.assert_array_equal(file[0], memory[0])
    np.testing.assert_array_equal(file[1], memory[1])
    assert file[2]["mse"] == memory[2]["mse"]
    # Drawn from under a quarter of an image's blocks (here 2 of 3 x 4), the sample's tiles
    # would save the label pass too little decoding for their memory: none are kept.
    monkeypatch.setattr(bigquant.sample, "MIN_BLOCKS", 2)
    big = write_tiff(tmp_path / "big.tif", np.tile(china, (3, 3, 1)), tile=(64, 64))
    taken.clear()
    bigquant.compress(big, tmp_path / "big.zarr", 16, sample_size=1000)
    assert sum(taken) == 0
    monkeypatch.setattr(bigquant.sample, "MIN_BLOCKS", 3)
    bigquant.compress(big, tmp_path / "big3.zarr", 16, sample_size=1000)
    assert sum(taken) > 0 and len(DECODED) == 0
    # Nor for dithering, whose label pass holds more memory.
    taken.clear()
    bigquant.compress(src, tmp_path / "dithered.zarr", 16, dither="ordered")
    assert sum(taken) == 0
