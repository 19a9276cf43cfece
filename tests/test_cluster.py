"""dask.distributed: same bytes on worker processes, lost workers, interrupted and resumed runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import run_cli, write_tiff
from distributed import Client, LocalCluster

import bigquant
from bigquant.errors import BigquantError
from bigquant.mosaic import write_mosaic
from bigquant.store import partial_path


def store_bytes(path) -> tuple[np.ndarray, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return np.asarray(group.attrs["codebook"]), group["labels"][:]


def assert_same_store(a, b):
    ca, la = store_bytes(a)
    cb, lb = store_bytes(b)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(la, lb)


@pytest.fixture(scope="module")
def cluster():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        # Not the default client: bigquant must route its work through the one it is given.
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def photo_tif(tmp_path_factory):
    from conftest import photo

    return write_tiff(
        tmp_path_factory.mktemp("c") / "chelsea.tif", photo("astronaut"), tile=(64, 64)
    )


@pytest.fixture(scope="module")
def local_store(photo_tif, tmp_path_factory):
    dst = tmp_path_factory.mktemp("local") / "local.zarr"
    bigquant.compress(photo_tif, dst, 32, sample_size=40_000, seed=3, chunks=128)
    return dst


def test_worker_processes_give_the_same_bytes(cluster, photo_tif, local_store, tmp_path):
    bigquant.compress(
        photo_tif, tmp_path / "c.zarr", 32, sample_size=40_000, seed=3, chunks=128, client=cluster
    )
    assert_same_store(tmp_path / "c.zarr", local_store)
    assert cluster.run(lambda: 1)  # the workers are alive and were used
    from distributed import default_client

    with pytest.raises(ValueError):  # and nothing stayed registered as the default client
        default_client()


def test_local_cluster_from_worker_count(photo_tif, local_store, tmp_path):
    bigquant.compress(
        photo_tif, tmp_path / "w.zarr", 32, sample_size=40_000, seed=3, chunks=128, workers=2
    )
    assert_same_store(tmp_path / "w.zarr", local_store)


def test_cli_on_dask_scheduler_and_workers(photo_tif, local_store, tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [
        subprocess.Popen(
            [
                *dask,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                    ],
                    stderr=subprocess.DEVNULL,
                )
            )
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        result = run_cli(
            "compress",
            photo_tif,
            tmp_path / "cli.zarr",
            "-c",
            32,
            "-s",
            40000,
            "--seed",
            3,
            "--chunks",
            128,
            "--scheduler",
            address,
        )
        assert result.returncode == 0, result.stderr
        assert "dashboard" in result.stderr
        assert_same_store(tmp_path / "cli.zarr", local_store)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_unreachable_scheduler_fails_quickly(photo_tif, tmp_path):
    started = time.monotonic()
    result = run_cli("compress", photo_tif, tmp_path / "x.zarr", "--scheduler", "tcp://127.0.0.1:9")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "x.zarr").exists()


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A 16-megapixel mosaic of photographs: 256 chunks of 256², enough to interrupt."""
    where = tmp_path_factory.mktemp("m")
    src = write_mosaic(where / "m.tif", 4096, 4096, tile=256)
    reference = where / "reference.zarr"
    bigquant.compress(src, reference, 64, seed=1, chunks=256)
    return src, reference


def test_killed_worker_does_not_change_the_result(mosaic, tmp_path):
    src, reference = mosaic
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        stats = Path(partial_path(tmp_path / "k.zarr")) / "chunk_stats"
        killed = []

        def kill_when_labelling():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if stats.exists() and sum(1 for _ in stats.rglob("c*/*/*")) >= 20:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(time.monotonic())
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_labelling)
        killer.start()
        bigquant.compress(src, tmp_path / "k.zarr", 64, seed=1, chunks=256, client=client)
        finished = time.monotonic()
        killer.join()
        # The worker died while chunks were still being labelled, and was replaced.
        assert killed and killed[0] < finished
        assert pids[0] not in client.run(os.getpid).values()
    assert_same_store(tmp_path / "k.zarr", reference)


def test_interrupted_run_resumes_without_redoing_chunks(mosaic, tmp_path):
    src, reference = mosaic
    dst = tmp_path / "r.zarr"
    args = ["compress", src, dst, "-c", 64, "--seed", 1, "--chunks", 256, "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigquant", *map(str, args)],
        env={**os.environ, "DASK_NUM_WORKERS": "1"},
    )
    stats = Path(partial_path(dst)) / "chunk_stats"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if stats.exists() and sum(1 for _ in stats.rglob("c*/*/*")) >= 40:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # a killed client: no chance to clean up
    proc.wait()
    assert not dst.exists()
    labels_dir = Path(partial_path(dst)) / "labels"
    finished = {p: p.stat().st_mtime_ns for p in labels_dir.rglob("c/*/*")}
    done = np.isfinite(zarr.open_group(partial_path(dst), mode="r")["chunk_stats"][:, :, 0])
    assert 40 <= done.sum() < done.size

    # A resume with other parameters is refused and leaves the unfinished store alone.
    other = run_cli("compress", src, dst, "-c", 32, "--seed", 1, "--chunks", 256, "--resume")
    assert other.returncode == 1 and "different n_colors_requested" in other.stderr
    assert Path(partial_path(dst)).exists()

    result = run_cli(*args, "--resume", "-v")
    assert result.returncode == 0, result.stderr
    assert f"resuming: {done.sum()} of {done.size} chunks already written" in result.stderr
    assert_same_store(dst, reference)
    assert not Path(partial_path(dst)).exists()
    # Finished chunks were not written again.
    rows, cols = np.nonzero(done)
    for r, c in zip(rows, cols, strict=True):
        chunk = dst / "labels" / "c" / str(r) / str(c)
        assert chunk.stat().st_mtime_ns == finished[labels_dir / "c" / str(r) / str(c)]
    # The finished store keeps to the contract: no bookkeeping array left.
    assert "chunk_stats" not in zarr.open_group(dst, mode="r")


def test_resume_of_an_array_source_is_refused(tmp_path):
    with pytest.raises(BigquantError, match="--resume needs a source file"):
        bigquant.compress(np.zeros((10, 10, 3), np.uint8), tmp_path / "a.zarr", 4, resume=True)


def test_fsspec_urls_on_worker_processes(cluster, photo_tif, local_store, tmp_path):
    # Workers open the source and write the store by URL themselves.
    dst = f"file://{tmp_path}/u.zarr"
    bigquant.compress(
        f"file://{photo_tif}", dst, 32, sample_size=40_000, seed=3, chunks=128, client=cluster
    )
    assert_same_store(tmp_path / "u.zarr", local_store)
    info = run_cli("info", dst, "--json")
    assert info.returncode == 0, info.stderr
    out = run_cli("decompress", dst, f"file://{tmp_path}/u.tif")
    assert out.returncode == 0, out.stderr
    codebook, labels = store_bytes(local_store)
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tmp_path / "u.tif"), codebook[labels])


def test_object_store_urls(photo_tif, local_store):
    # fsspec's in-memory filesystem behaves like an object store: no folders, no renames.
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/bq/in.tif", photo_tif.read_bytes())
    try:
        bigquant.compress(
            "memory://bq/in.tif", "memory://bq/out.zarr", 32, sample_size=40_000, seed=3, chunks=128
        )
        store = bigquant.open_store("memory://bq/out.zarr")
        codebook, labels = store_bytes(local_store)
        np.testing.assert_array_equal(store.codebook, codebook)
        np.testing.assert_array_equal(store.labels[:], labels)
        assert not memory.exists("/bq/.out.zarr.partial")
        with pytest.raises(BigquantError, match="already exists"):
            bigquant.compress("memory://bq/in.tif", "memory://bq/out.zarr", 32)
    finally:
        memory.rm("/bq", recursive=True)
