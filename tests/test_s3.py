"""Object storage for real: an S3-compatible server (moto) on 127.0.0.1, reached through s3fs.

Configured only by the standard AWS environment variables, as a user would.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from conftest import cli, photo, two_writers, write_tiff
from PIL import Image

import bigquant
from bigquant.errors import BigquantError
from bigquant.mosaic import write_mosaic

s3fs = pytest.importorskip("s3fs")
BUCKET = "bigquant-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3():
    """The server's filesystem; the AWS variables point this process (and its children) at it."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "no S3 server"
                time.sleep(0.1)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield fs
    finally:
        server.terminate()
        server.wait(timeout=30)
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def url(name: str) -> str:
    return f"s3://{BUCKET}/{name}"


def stored(store) -> tuple[np.ndarray, np.ndarray]:
    opened = bigquant.open_store(store)
    return opened.codebook, opened.labels[:]


def assert_same(a, b):
    (ca, la), (cb, lb) = stored(a), stored(b)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(la, lb)


@pytest.fixture(scope="session")
def china_s3(s3, tmp_path_factory):
    """china.jpg as a tiled TIFF, locally and in the bucket."""
    local = write_tiff(tmp_path_factory.mktemp("s3") / "china.tif", photo("china"), tile=(64, 64))
    s3.put(str(local), f"{BUCKET}/china.tif")
    return local


def test_s3_to_s3_reads_each_tile_about_once_and_gives_the_local_bytes(s3, tmp_path, monkeypatch):
    src = write_mosaic(tmp_path / "m.tif", 2048, 2048, tile=512)
    s3.put(str(src), f"{BUCKET}/m.tif")
    fetched = []
    real = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        data = real(self, start, end)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    result = cli("compress", url("m.tif"), url("m.zarr"), "-c", 32)
    assert result.returncode == 0, result.stderr
    # The tiles the sample needs (all of a 4-megapixel image), then every tile once more.
    assert sum(fetched) <= 2.5 * src.stat().st_size, (sum(fetched), src.stat().st_size)
    bigquant.compress(src, tmp_path / "m.zarr", 32)
    assert_same(url("m.zarr"), tmp_path / "m.zarr")
    assert not s3.exists(f"{BUCKET}/.m.zarr.partial")

    # The outputs of a store in the bucket are the outputs of the same store on disk.
    info = cli("info", url("m.zarr"), "--json", "--check")
    assert info.returncode == 0, info.stderr
    for name, extra in [("p.tif", ["--palette"]), ("v.png", [])]:
        command = "preview" if name.endswith(".png") else "decompress"
        assert cli(command, url("m.zarr"), url(name), *extra).returncode == 0
        assert cli(command, tmp_path / "m.zarr", tmp_path / name, *extra).returncode == 0
        s3.get(f"{BUCKET}/{name}", str(tmp_path / f"s3-{name}"))
        assert (tmp_path / f"s3-{name}").read_bytes() == (tmp_path / name).read_bytes()
    store = bigquant.open_store(url("m.zarr"))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s3-p.tif"), store.labels[:])
    with Image.open(tmp_path / "s3-v.png") as im:
        assert im.size == (2048, 2048)  # no larger than --max-size: the image itself


def test_worker_processes_read_and_write_the_bucket(s3, china_s3, tmp_path):
    # A small fit (the workers' part is reading and writing), four chunks.
    kwargs = {"sample_size": 5_000, "seed": 2, "chunks": 256, "max_iter": 3}
    bigquant.compress(url("china.tif"), url("w.zarr"), 16, workers=2, **kwargs)
    bigquant.compress(china_s3, tmp_path / "w.zarr", 16, **kwargs)
    assert_same(url("w.zarr"), tmp_path / "w.zarr")


def test_an_interrupted_label_pass_resumes_in_the_bucket(s3, china_s3, tmp_path, monkeypatch):
    from bigquant import write as write_stage

    real, calls = write_stage.label_chunk, []

    def failing(*args):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(write_stage, "label_chunk", failing)
    args = ("compress", url("china.tif"), url("r.zarr"), "-c", 16, "--chunks", 128, "-s", 20000)
    assert cli(*args).returncode == 130
    assert not s3.exists(f"{BUCKET}/r.zarr") and s3.exists(f"{BUCKET}/.r.zarr.partial")
    monkeypatch.setattr(write_stage, "label_chunk", real)
    result = cli(*args, "--resume", "-v")
    assert result.returncode == 0, result.stderr
    assert "resuming: " in result.stderr
    bigquant.compress(china_s3, tmp_path / "r.zarr", 16, chunks=128, sample_size=20_000)
    assert_same(url("r.zarr"), tmp_path / "r.zarr")


@pytest.mark.parametrize(
    ("cut", "overwrite"),
    [
        ("deleting the old store", True),
        ("copying the new one", True),
        ("copying the new one", False),
    ],
)
def test_moving_a_store_into_place_is_safe_to_interrupt(
    s3, china_s3, tmp_path, monkeypatch, cut, overwrite
):
    dst = url(f"o-{cut.split()[0]}-{overwrite}.zarr")
    args = ("compress", url("china.tif"), dst, "--chunks", 128, "-s", 20000, "-c", 8)
    flags = ("--overwrite",) if overwrite else ()
    if overwrite:
        assert cli(*args[:-1], 4).returncode == 0  # the old store, of 4 colours
    # Cut the move short after its first step: the old store's root metadata deleted, or every
    # object of the new store copied but its root metadata. (bigquant's calls reach the same
    # cached filesystem instance as `s3`.)
    method = "rm" if cut.startswith("deleting") else "copy"
    real, calls = getattr(s3, method), []

    def cut_short(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(s3, method, cut_short)
    assert cli(*args, *flags).returncode == 130
    assert len(calls) == 2 + (method == "rm")  # and the run's claim released after the cut
    monkeypatch.undo()
    # Something is there, but neither the old store nor one that reads as complete.
    assert s3.exists(dst.removeprefix("s3://"))
    with pytest.raises(BigquantError, match=r"not a bigquant store|incomplete|missing"):
        bigquant.open_store(dst)
    # The same command with --resume finishes it.
    result = cli(*args, *flags, "--resume", "-v")
    assert result.returncode == 0, result.stderr
    assert "only moving it into place was cut short" in result.stderr
    bigquant.compress(china_s3, tmp_path / "o.zarr", 8, chunks=128, sample_size=20_000)
    assert_same(dst, tmp_path / "o.zarr")
    assert not s3.exists(f"{BUCKET}/.{dst.rsplit('/', 1)[1]}.partial")


def test_a_missing_label_chunk_is_refused(s3, china_s3):
    args = ("compress", url("china.tif"), url("gap.zarr"), "-c", 8, "--chunks", 128, "-s", 20000)
    assert cli(*args).returncode == 0
    chunks = [k for k in s3.find(f"{BUCKET}/gap.zarr/labels") if "/c/" in k]
    s3.rm(chunks[3])
    result = cli("info", url("gap.zarr"))
    assert result.returncode == 1 and "1 of 20 label chunks missing" in result.stderr


def test_s3_without_s3fs_names_the_extra(tmp_path, monkeypatch):
    import fsspec.core

    real = fsspec.core.url_to_fs

    def no_s3fs(url, **kwargs):
        if url.startswith("s3://"):
            raise ImportError("Install s3fs to access S3")  # what fsspec says without it
        return real(url, **kwargs)

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_s3fs)
    result = cli("compress", "s3://bucket/scan.tif", tmp_path / "o.zarr")
    assert result.returncode == 1
    assert "pip install 'bigquant[s3]'" in result.stderr.strip().splitlines()[-1]


def test_one_writer_per_store_and_overwrite_rules_in_the_bucket(s3, china_s3, tmp_path):
    # Two runs into one store started together: the claim is a conditional write there.
    args = ["compress", url("china.tif"), url("c.zarr"), "-q"]
    survivor, other, procs, errs = two_writers(tmp_path, *args)
    assert procs[other].returncode == 1 and errs[other].count("\n") == 1, errs[other]
    assert errs[other].startswith(
        "bigquant: error: c.zarr is being written by another run (pid "
    ) or errs[other].endswith("c.zarr already exists (use --overwrite to replace it)\n")
    bigquant.compress(china_s3, tmp_path / "c.zarr", codebook=tmp_path / survivor)
    assert_same(url("c.zarr"), tmp_path / "c.zarr")
    assert not s3.exists(f"{BUCKET}/.c.zarr.lock") and not s3.exists(f"{BUCKET}/.c.zarr.partial")

    # --overwrite replaces only a bigquant store there: not a prefix of other files, nor a
    # file of another kind under a preview's name.
    s3.pipe(f"{BUCKET}/theirs.zarr/thesis.txt", b"mine")
    s3.pipe(f"{BUCKET}/notes.png", b"mine")
    result = cli("compress", china_s3, url("theirs.zarr"), "--overwrite", "-c", 4)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{url('theirs.zarr')} is a folder holding thesis.txt, not a bigquant store" in (
        result.stderr
    )
    result = cli("preview", url("c.zarr"), url("notes.png"), "--overwrite")
    assert result.returncode == 1 and "is a file that is not a PNG file" in result.stderr
    assert s3.cat(f"{BUCKET}/theirs.zarr/thesis.txt") == s3.cat(f"{BUCKET}/notes.png") == b"mine"


@pytest.mark.parametrize("layout", ["deepzoom", "xyz"])
def test_tiles_to_s3_are_the_local_tiles_and_a_rerun_finishes_only_the_missing(
    s3, tmp_path, layout
):
    """`bigquant tiles` into a bucket: the same objects, byte for byte, as into a folder (the
    lower levels made in a local temporary folder); an interrupted set is finished, a
    finished one refused."""
    from bigquant.tiles import write_tiles

    store = tmp_path / "china.zarr"
    bigquant.compress(photo("china"), store, 16, chunks=160)
    (tmp_path / "web").mkdir()
    local = tmp_path / "web" / "china"
    n = write_tiles(store, local, layout=layout)
    result = cli("tiles", str(store), url(f"web-{layout}/china"), "--layout", layout)
    assert result.returncode == 0, result.stderr

    def objects() -> dict[str, bytes]:
        found = s3.find(f"{BUCKET}/web-{layout}")
        return {f.removeprefix(f"{BUCKET}/web-{layout}/"): s3.cat_file(f) for f in found}

    files = {
        str(p.relative_to(tmp_path / "web")): p.read_bytes()
        for p in (tmp_path / "web").rglob("*")
        if p.is_file()
    }
    assert objects() == files and sum(k.endswith(".png") for k in files) == n
    # No claim left, and the lower levels (made beside the output, for every worker) removed.
    assert not s3.exists(
        f"{BUCKET}/web-{layout}/.china{'.dzi' if layout == 'deepzoom' else ''}.lock"
    )
    assert not [k for k in s3.ls(f"{BUCKET}/web-{layout}") if ".bigquant-levels-" in k]

    # A run cut short: its last mark and some tiles missing. The rerun writes those alone.
    finished = "china.dzi" if layout == "deepzoom" else "china/.bigquant-tiles.json"
    cut = sorted(k for k in files if k.endswith(".png"))[::7]
    s3.rm([f"{BUCKET}/web-{layout}/{k}" for k in [finished, *cut]])
    if layout == "xyz":  # its manifest is its mark: unfinished
        s3.pipe_file(
            f"{BUCKET}/web-{layout}/{finished}", files[finished].replace(b"true", b"false")
        )
    assert write_tiles(store, url(f"web-{layout}/china"), layout=layout) == len(cut)
    assert objects() == files

    again = cli("tiles", str(store), url(f"web-{layout}/china"), "--layout", layout)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and objects() == files
    root = "china_files" if layout == "deepzoom" else "china"
    s3.pipe_file(f"{BUCKET}/web-{layout}/{root}/0/stale.png", b"an old tile")
    over = cli("tiles", str(store), url(f"web-{layout}/china"), "--layout", layout, "--overwrite")
    assert over.returncode == 0, over.stderr
    assert objects() == files  # replaced whole: the stale tile is gone

    # A prefix of someone else's objects: refused, --overwrite or not, and kept.
    s3.pipe_file(
        f"{BUCKET}/theirs-{layout}/china{'_files' if layout == 'deepzoom' else ''}/a.txt", b"x"
    )
    for extra in ((), ("--overwrite",)):
        refused = cli(
            "tiles", str(store), url(f"theirs-{layout}/china"), "--layout", layout, *extra
        )
        assert refused.returncode == 1 and "not bigquant tiles" in refused.stderr
    assert len(s3.find(f"{BUCKET}/theirs-{layout}")) == 1


def test_view_of_a_store_in_the_bucket_shows_its_tiles_and_its_source(s3, china_s3, tmp_path):
    """`bigquant view s3://…`: the lower levels are made in a local temporary folder from the
    bucket's labels, every tile is the local store's, and the source (in the bucket too) is
    read from there."""
    from bigquant.view import Viewer

    local = tmp_path / "china.zarr"
    bigquant.compress(str(china_s3), local, 16, chunks=160)
    bigquant.compress(url("china.tif"), url("view.zarr"), 16, chunks=160)
    with Viewer(url("view.zarr")) as remote, Viewer(local) as here:
        assert os.path.isdir(remote._tmp)  # the levels the store lacks, made here
        top = remote.tiler.top
        assert remote.info()["source"]["available"] and remote.tiler.grid(top) == here.tiler.grid(
            top
        )
        for level, col, row in ((top, 1, 1), (top - 1, 1, 0), (top - 4, 0, 0), (0, 0, 0)):
            path = f"/tile/{level}/{col}_{row}.png"
            assert remote.respond(path) == here.respond(path)
        source = np.asarray(Image.open(io.BytesIO(remote.respond(f"/source/{top}/1_0.png")[1])))
        np.testing.assert_array_equal(source, photo("china")[0:255, 253:509])


def test_view_serves_the_tiles_written_to_the_bucket(s3, tmp_path):
    """`bigquant view STORE --tiles s3://…/OUT.dzi`: the tiles `bigquant tiles` put in the
    bucket are served as they are, a tile missing there is rendered, and tiles of another
    store are refused."""
    from bigquant.tiles import write_tiles
    from bigquant.view import Viewer

    store = tmp_path / "china.zarr"
    bigquant.compress(photo("china"), store, 16, chunks=160)
    write_tiles(store, url("served/china"))
    with Viewer(store, tiles=url("served/china.dzi")) as viewer, Viewer(store) as rendered:
        top, files = viewer.tiler.top, f"{BUCKET}/served/china_files"
        s3.pipe_file(f"{files}/{top}/1_1.png", b"the bucket's own bytes")
        s3.rm(f"{files}/{top}/0_1.png")
        assert viewer.respond(f"/tile/{top}/1_1.png")[1] == b"the bucket's own bytes"
        missing = f"/tile/{top}/0_1.png"
        assert viewer.respond(missing) == rendered.respond(missing)
        assert viewer.respond("/tile/5/0_0.png")[1] == s3.cat_file(f"{files}/5/0_0.png")
    other = tmp_path / "other.zarr"
    bigquant.compress(photo("china"), other, 8, chunks=160)
    with pytest.raises(BigquantError, match="tiles of"):
        Viewer(other, tiles=url("served/china.dzi"))
    with pytest.raises(BigquantError, match="not a finished"):
        Viewer(store, tiles=url("nothing/here.dzi"))
