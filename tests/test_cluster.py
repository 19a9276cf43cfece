"""dask.distributed: same bytes on worker processes, lost workers, interrupted and resumed runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from conftest import (
    cli,
    damage_software_tag,
    run_cli,
    sigint_as_a_terminal_gives_it,
    two_writers,
    write_tiff,
)
from distributed import Client, LocalCluster

import bigquant
from bigquant.errors import BigquantError, ClusterError
from bigquant.mosaic import write_mosaic
from bigquant.output import Output
from bigquant.read import DECODED


def store_bytes(path) -> tuple[np.ndarray, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return np.asarray(group.attrs["codebook"]), group["labels"][:]


def assert_same_store(a, b):
    ca, la = store_bytes(a)
    cb, lb = store_bytes(b)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(la, lb)


def listening() -> set[tuple[int, str, int]]:
    """``(pid, address, port)`` of every socket this process and its children listen on."""
    import psutil

    me = psutil.Process()
    found = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(proc.pid, *c.laddr) for c in conns if c.status == psutil.CONN_LISTEN}
    return found


def wait_for_chunks(dst, n: int, proc: subprocess.Popen | None = None) -> None:
    """Return once ``n`` chunks of the run writing ``dst`` are written (or ``proc`` ended)."""
    stats = Path(Output(dst).partial) / "chunk_stats"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        if stats.exists() and sum(1 for _ in stats.rglob("c*/*/*")) >= n:
            return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def cluster():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
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
    from dask.utils import key_split
    from distributed import get_task_stream

    with get_task_stream(cluster) as stream:
        bigquant.compress(
            photo_tif, tmp_path / "c.zarr", 32, sample_size=40_000, seed=3, chunks=128,
            client=cluster,
        )  # fmt: skip
    assert_same_store(tmp_path / "c.zarr", local_store)
    # Every chunk was labelled and written by the cluster's worker processes.
    # One task a chunk: its read, labels and write, fused (keys ("bigquant-write-…", r, c, 0)).
    writes = [t for t in stream.data if key_split(t["key"]) == "bigquant-write"]
    assert len(writes) == 16  # 512 x 512 in chunks of 128
    assert {t["worker"] for t in writes} <= set(cluster.scheduler_info()["workers"])
    from distributed import default_client

    with pytest.raises(ValueError):  # and nothing stayed registered as the default client
        default_client()


def test_local_cluster_from_worker_count(
    photo_tif, local_store, tmp_path, monkeypatch, caplog, capfd
):
    import logging
    import warnings

    import bigquant.pipeline as pipeline
    import bigquant.sample as sample_stage
    import bigquant.write as write_stage

    # The same pixels, with a damaged Software tag: tifffile logs a notice in each process
    # that opens the file, here while sampling and on the workers.
    src = damage_software_tag(photo_tif, tmp_path / "damaged.tif")

    # The sample is read in this process while the workers start: a task run on a worker
    # would append to a copy of `samplers` there.
    real_gather, samplers = sample_stage._gather, []

    def gather_and_report(*args):
        samplers.append(os.getpid())
        return real_gather(*args)

    monkeypatch.setattr(sample_stage, "_gather", gather_and_report)
    # Each chunk's task reports the process that labelled and wrote it, and warns.
    real_write, real_compute = write_stage._assign_write, pipeline.run_tasks
    writers = []

    def write_and_report(*args):
        real_write(*args)
        warnings.warn("a worker's warning", stacklevel=1)
        return os.getpid(), "dask.array" in sys.modules

    sockets = []

    kept = []

    def compute_and_collect(*tasks, **options):
        sockets.append(listening())  # while the cluster runs
        kept.append(len(DECODED))
        results = real_compute(*tasks, **options)
        writers.extend(results[0])  # the write tasks' results
        return results

    monkeypatch.setattr(write_stage, "_assign_write", write_and_report)
    monkeypatch.setattr(pipeline, "run_tasks", compute_and_collect)
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.INFO, logger="bigquant")
    before = listening()  # other tests' clusters in this process
    bigquant.compress(
        src, tmp_path / "w.zarr", 32, sample_size=40_000, seed=3, chunks=128, workers=2
    )
    assert_same_store(tmp_path / "w.zarr", local_store)
    # The scheduler, the workers and the dashboard listened on loopback only, and the log
    # gave the dashboard's real address.
    ours = sockets[0] - before
    assert {address for _, address, _ in ours} == {"127.0.0.1"}
    assert len({pid for pid, _, _ in ours}) == 3  # this process and two workers
    dashboard = [r.getMessage() for r in caplog.records if "dashboard: " in r.getMessage()]
    ports = {port for _, _, port in ours}
    assert len(dashboard) == 1 and "dashboard: http://127.0.0.1:" in dashboard[0]
    assert int(dashboard[0].split("127.0.0.1:")[-1].split("/")[0]) in ports
    # 16 chunks, written by worker processes (at most two), never by this one.
    pids = {pid for pid, _ in writers}
    assert len(writers) == 16 and os.getpid() not in pids and len(pids) <= 2
    # Reading the TIFF, labelling and writing need no dask.array there (see bigquant.cluster).
    assert not any(imported for _, imported in writers)
    assert samplers and set(samplers) == {os.getpid()}
    # The workers decode every tile: this process kept none of the sample's for them.
    assert kept[0] == 0
    # The workers' notices went to this process's loggers (for the command's -v), not to
    # the stderr the worker processes share with it.
    notices = {(r.name, r.getMessage()) for r in caplog.records if r.process in pids}
    assert any(n == "tifffile" and "invalid value offset" in m for n, m in notices)
    assert any(n == "py.warnings" and "a worker's warning" in m for n, m in notices)
    err = capfd.readouterr().err
    assert "invalid value offset" not in err and "a worker's warning" not in err


def test_local_workers_that_cannot_start_fail_in_one_line(photo_tif, local_store, tmp_path):
    # Every worker process imports these as it starts: one that does not exist fails them
    # all. A process of its own, as the command's, whose stderr the workers share.
    command = (
        "import sys, bigquant.cluster, bigquant.cli\n"
        "bigquant.cluster._WORKER_MODULES = ['bigquant_no_such_module']\n"
        "bigquant.cli.main(sys.argv[1:])"
    )
    # A codebook given: no fit to wait for before the workers are needed.
    args = ["compress", photo_tif, tmp_path / "w.zarr", "--codebook", local_store, "-w", 2, "-q"]
    result = subprocess.run(
        [sys.executable, "-c", command, *map(str, args)], capture_output=True, text=True
    )
    # The reason the worker processes gave, not distributed's "Nanny failed to start", and
    # none of the tracebacks distributed logs.
    assert result.returncode == 1 and result.stderr == (
        "bigquant: error: the 2 local worker processes did not start: "
        "ModuleNotFoundError: No module named 'bigquant_no_such_module'\n"
    )
    assert not (tmp_path / "w.zarr").exists()


def test_a_chunk_a_worker_cannot_read_fails_in_one_line(photo_tif, local_store, tmp_path):
    # One tile zeroed: with a codebook given, no pixel is read before the worker reads it.
    src = tmp_path / "damaged.tif"
    with tifffile.TiffFile(photo_tif) as tif:
        offset, size = tif.pages[0].dataoffsets[20], tif.pages[0].databytecounts[20]
    damaged = bytearray(photo_tif.read_bytes())
    damaged[offset : offset + size] = bytes(size)
    src.write_bytes(bytes(damaged))
    # A process of its own: the worker processes print to its stderr, not to click's.
    result = run_cli(
        "compress", src, tmp_path / "x.zarr", "--codebook", local_store, "--workers", 1, "-q"
    )  # fmt: skip
    # Not the worker's "Compute Failed" report with its traceback: distributed logs only
    # with -v.
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("bigquant: error: ") and "cannot decode pixels" in result.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_cli_on_a_dask_scheduler(cluster, photo_tif, local_store, tmp_path):
    # The scheduler of the worker processes above, reached by its address as a user would.
    address = cluster.scheduler.address
    result = cli(
        "compress", photo_tif, tmp_path / "cli.zarr", "-c", 32, "-s", 40000, "--seed", 3,
        "--chunks", 128, "--scheduler", address,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"running on {address} (2 workers); dashboard" in result.stderr
    assert_same_store(tmp_path / "cli.zarr", local_store)


def test_unreachable_scheduler_fails_quickly(photo_tif, tmp_path, monkeypatch):
    monkeypatch.setattr("bigquant.cluster.CONNECT_TIMEOUT", "2s")
    started = time.monotonic()
    result = cli("compress", photo_tif, tmp_path / "x.zarr", "--scheduler", "tcp://127.0.0.1:9")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9 within 2s" in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "x.zarr").exists()


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A 4-megapixel mosaic of photographs: 64 chunks of 256², enough to interrupt."""
    where = tmp_path_factory.mktemp("m")
    src = write_mosaic(where / "m.tif", 2048, 2048, tile=256)
    reference = where / "reference.zarr"
    # 60 colours: just too few for a colour table to pay, so no process spends seconds on one.
    bigquant.compress(src, reference, 60, seed=1, chunks=256, sample_size=20_000)
    return src, reference


def test_killed_workers_do_not_change_the_result(mosaic, tmp_path):
    src, _ = mosaic
    # 16 colours: too few for a colour table to pay, so no process spends seconds filling one.
    kwargs = {"seed": 1, "chunks": 256, "sample_size": 20_000}
    bigquant.compress(src, tmp_path / "reference.zarr", 16, **kwargs)

    def kill_when_labelling(dst, pid, killed):
        wait_for_chunks(dst, 12)
        os.kill(pid, signal.SIGKILL)
        killed.append(time.monotonic())

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        pids, killed = list(client.run(os.getpid).values()), []
        killer = threading.Thread(
            target=kill_when_labelling, args=(tmp_path / "k.zarr", pids[0], killed)
        )
        killer.start()
        bigquant.compress(src, tmp_path / "k.zarr", 16, client=client, **kwargs)
        finished = time.monotonic()
        killer.join()
        # The worker died while chunks were still being labelled, and was replaced.
        assert killed and killed[0] < finished
        assert pids[0] not in client.run(os.getpid).values()
        assert_same_store(tmp_path / "k.zarr", tmp_path / "reference.zarr")

        # A scheduler that gives a task up after one lost worker (as dask's default does
        # after four): one line for the command, and the chunks written so far kept.
        client.run_on_scheduler(
            lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0)
        )
        pid, killed = next(iter(client.run(os.getpid).values())), []
        killer = threading.Thread(
            target=kill_when_labelling, args=(tmp_path / "l.zarr", pid, killed)
        )
        killer.start()
        with pytest.raises(
            ClusterError, match=r"the worker process at tcp://\S+ died running task \S*'bigquant-"
        ):
            bigquant.compress(src, tmp_path / "l.zarr", 16, client=client, **kwargs)
        killer.join()
    # What was written stays for --resume (as after an interrupt, tested below).
    done = zarr.open_group(Output(tmp_path / "l.zarr").partial, mode="r")["chunk_stats"][:, :, 0]
    assert killed and np.isfinite(done).sum() >= 12


def test_interrupted_run_resumes_without_redoing_chunks(mosaic, tmp_path):
    src, reference = mosaic
    dst = tmp_path / "r.zarr"
    # 256 chunks on one thread: slow enough to be killed halfway.
    args = ["compress", src, dst, "-c", 60, "--seed", 1, "--chunks", 128, "-s", 20000, "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigquant", *map(str, args)],
        env={**os.environ, "DASK_NUM_WORKERS": "1"},
    )
    wait_for_chunks(dst, 40, proc)
    os.kill(proc.pid, signal.SIGKILL)  # a killed client: no chance to clean up
    proc.wait()
    assert not dst.exists()
    labels_dir = Path(Output(dst).partial) / "labels"
    finished = {p: p.stat().st_mtime_ns for p in labels_dir.rglob("c/*/*")}
    done = np.isfinite(zarr.open_group(Output(dst).partial, mode="r")["chunk_stats"][:, :, 0])
    assert 40 <= done.sum() < done.size

    # A resume with other parameters is refused and leaves the unfinished store alone.
    other = cli(*args[:3], "-c", 32, *args[5:], "--resume")
    assert other.returncode == 1 and "different --colors" in other.stderr
    # The killed run's claim was taken over (its pid is gone), and released again.
    assert f"taking over the claim of a run that is gone (pid {proc.pid} on host " in other.stderr
    assert not (tmp_path / ".r.zarr.lock").exists()
    assert Path(Output(dst).partial).exists()

    result = cli(*args, "--resume", "-v")
    assert result.returncode == 0, result.stderr
    assert f"resuming: {done.sum()} of {done.size} chunks already written" in result.stderr
    assert_same_store(dst, reference)
    assert not Path(Output(dst).partial).exists()
    # Finished chunks were not written again.
    rows, cols = np.nonzero(done)
    for r, c in zip(rows, cols, strict=True):
        chunk = dst / "labels" / "c" / str(r) / str(c)
        assert chunk.stat().st_mtime_ns == finished[labels_dir / "c" / str(r) / str(c)]
    # The finished store keeps to the contract: no bookkeeping array left.
    assert "chunk_stats" not in zarr.open_group(dst, mode="r")


def test_ctrl_c_on_worker_processes_prints_no_traceback(mosaic, tmp_path):
    src, reference = mosaic
    dst = tmp_path / "i.zarr"
    args = ["compress", src, dst, "--codebook", reference, "--chunks", 128, "--workers", 1, "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigquant", *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives a command
        preexec_fn=sigint_as_a_terminal_gives_it,
    )
    wait_for_chunks(dst, 20, proc)
    # Ctrl-C: SIGINT to every process of the group, the worker process too.
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # No worker's KeyboardInterrupt traceback, nor the client's dropped tasks.
    assert err == (
        f"bigquant: kept the unfinished output in {Output(dst).partial}: resume the run "
        "(--resume, or resume=True) to finish it\nbigquant: error: interrupted\n"
    )


def test_sigterm_keeps_the_unfinished_store_as_ctrl_c_does(mosaic, tmp_path):
    # SIGTERM to the command alone, as `timeout`, Kubernetes and SLURM's first signal send it.
    src, reference = mosaic
    dst = tmp_path / "t.zarr"
    args = ["compress", src, dst, "--codebook", reference, "--chunks", 128, "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigquant", *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DASK_NUM_WORKERS": "1"},
    )
    wait_for_chunks(dst, 20, proc)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err == (
        f"bigquant: kept the unfinished output in {Output(dst).partial}: resume the run "
        "(--resume, or resume=True) to finish it\nbigquant: error: terminated\n"
    )
    done = np.isfinite(zarr.open_group(Output(dst).partial, mode="r")["chunk_stats"][:, :, 0])
    assert 20 <= done.sum() < done.size and not dst.exists()
    assert not (tmp_path / ".t.zarr.lock").exists()  # the claim released: free to --resume


def test_resume_of_an_array_source_is_refused(tmp_path):
    with pytest.raises(BigquantError, match="`resume` needs a source file"):
        bigquant.compress(np.zeros((10, 10, 3), np.uint8), tmp_path / "a.zarr", 4, resume=True)


def test_fsspec_urls_on_worker_processes(cluster, photo_tif, local_store, tmp_path):
    # Workers open the source and write the store by URL themselves.
    dst = f"file://{tmp_path}/u.zarr"
    bigquant.compress(
        f"file://{photo_tif}", dst, 32, sample_size=40_000, seed=3, chunks=128, client=cluster
    )
    assert_same_store(tmp_path / "u.zarr", local_store)
    info = cli("info", dst, "--json")
    assert info.returncode == 0, info.stderr
    out = cli("decompress", dst, f"file://{tmp_path}/u.tif")
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


def test_collection_gives_the_same_bytes_on_worker_processes(cluster, photo_tif, tmp_path):
    from conftest import photo

    other = write_tiff(tmp_path / "coffee.tif", photo("coffee")[::2, ::2], tile=(64, 64))
    for where, client in (("threads", None), ("cluster", cluster)):
        bigquant.compress_many(
            [photo_tif, other], tmp_path / where, 16, sample_size=30_000, chunks=128, client=client
        )
    for name in ("chelsea.zarr", "coffee.zarr"):
        assert_same_store(tmp_path / "threads" / name, tmp_path / "cluster" / name)


def _forbid_table_fills(forbid: bool) -> None:
    from bigquant.kernels import nearest

    if forbid:
        nearest._real_fill_table = nearest._fill_table

        def refuse(*args):
            raise AssertionError("a worker filled a colour table")

        nearest._fill_table = refuse
    else:
        nearest._fill_table = nearest._real_fill_table


def test_workers_label_with_the_clients_colour_table(cluster, tmp_path):
    # 1 MP at K = 256 is where the colour table pays: the client fills it (fitting), the
    # workers get a copy. A worker that filled its own would fail its task here.
    from conftest import photo

    from bigquant.kernels.nearest import nearest

    image = np.tile(photo("astronaut"), (2, 2, 1))
    src = write_tiff(tmp_path / "a.tif", image, tile=(256, 256))
    cluster.run(_forbid_table_fills, True)
    try:
        bigquant.compress(src, tmp_path / "c.zarr", 256, sample_size=40_000, client=cluster)
    finally:
        cluster.run(_forbid_table_fills, False)
    codebook, labels = store_bytes(tmp_path / "c.zarr")
    pixels = image.reshape(-1, 3)[::7]  # every 7th pixel: the exact nearest colour
    np.testing.assert_array_equal(labels.reshape(-1)[::7], nearest(pixels, codebook)[0])


def test_one_writer_per_output(photo_tif, tmp_path):
    # Two runs into one store started together, as a requeued job beside its first attempt.
    dst = tmp_path / "c.zarr"
    args = ["compress", photo_tif, dst, "-q", "--chunks", "128"]
    survivor, other, procs, errs = two_writers(tmp_path, *args)
    # One run wrote the store; the other stopped in one line, having written nothing: at the
    # claim while the first ran, or at the finished store.
    assert procs[other].returncode == 1 and "Traceback" not in errs[other], errs[other]
    claimed = "bigquant: error: c.zarr is being written by another run (pid "
    assert errs[other].startswith(claimed) or errs[other] == (
        f"bigquant: error: {dst} already exists (use --overwrite to replace it)\n"
    ), errs[other]
    if errs[other].startswith(claimed):
        pid = procs[survivor].pid
        assert f"(pid {pid} on host {socket.gethostname()} since " in errs[other]
        assert f"wait for it, or remove {tmp_path}/.c.zarr.lock if that run is gone" in errs[other]
    # The store is the survivor's own uninterrupted run, bit for bit, and nothing is left beside.
    reference = tmp_path / "reference.zarr"
    bigquant.compress(photo_tif, reference, chunks=128, codebook=tmp_path / survivor)
    assert_same_store(dst, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.hex",
        "b.hex",
        "c.zarr",
        "reference.zarr",
    ]


def files(path) -> dict[str, bytes]:
    """Every file of a store, by its path inside it."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*"))
            if p.is_file()}  # fmt: skip


def test_compute_false_defers_the_labelling_to_the_cluster(cluster, photo_tif, tmp_path):
    import dask
    from dask.delayed import Delayed

    kwargs = {"sample_size": 40_000, "seed": 3, "chunks": 128, "pyramid": True}
    now = bigquant.compress(photo_tif, tmp_path / "now.zarr", 32, **kwargs)
    later = [
        bigquant.compress(
            photo_tif, tmp_path / f"{n}.zarr", 32, client=cluster, compute=False, **kwargs
        )
        for n in ("a", "b")
    ]
    assert all(isinstance(d, Delayed) for d in later)
    # Fitted and created, not labelled: nothing at the outputs, and they stay claimed.
    assert not (tmp_path / "a.zarr").exists() and (tmp_path / ".a.zarr.lock").exists()
    assert np.isnan(zarr.open_group(Output(tmp_path / "a.zarr").partial)["chunk_stats"][:]).all()
    with pytest.raises(BigquantError, match="being written by another run"):
        bigquant.compress(photo_tif, tmp_path / "a.zarr", 32, overwrite=True, **kwargs)
    metas = dask.compute(*later)  # both on the cluster, the pyramid's tasks too
    assert metas[0] == metas[1] == now
    for n in ("a", "b"):
        assert files(tmp_path / f"{n}.zarr") == files(tmp_path / "now.zarr")
        assert not (tmp_path / f".{n}.zarr.lock").exists()
        assert not Path(Output(tmp_path / f"{n}.zarr").partial).exists()


def test_compute_false_on_threads_and_not_with_workers(photo_tif, tmp_path):
    from bigquant.errors import ParameterError

    kwargs = {"sample_size": 40_000, "seed": 3, "chunks": 128, "dither": "floyd-steinberg"}
    now = bigquant.compress(photo_tif, tmp_path / "now.zarr", 32, **kwargs)
    later = bigquant.compress(photo_tif, tmp_path / "later.zarr", 32, compute=False, **kwargs)
    assert later.compute() == now
    assert files(tmp_path / "later.zarr") == files(tmp_path / "now.zarr")
    with pytest.raises(ParameterError, match="not `workers`"):
        bigquant.compress(photo_tif, tmp_path / "w.zarr", 32, workers=2, compute=False)
    assert not (tmp_path / ".w.zarr.lock").exists()


def test_tiles_on_worker_processes_are_the_tiles_of_threads(cluster, local_store, tmp_path):
    """`write_tiles` on a cluster: the workers make the missing label levels and encode every
    tile, and the tile set is byte for byte the one threads write."""
    from distributed import get_task_stream

    from bigquant.tiles import write_tiles

    (tmp_path / "threads").mkdir()
    (tmp_path / "workers").mkdir()
    n = write_tiles(local_store, tmp_path / "threads" / "t", tile_size=62)
    with get_task_stream(cluster) as stream:
        assert (
            write_tiles(local_store, tmp_path / "workers" / "t", tile_size=62, client=cluster) == n
        )
    assert any("_write_block" in str(t["key"]) for t in stream.data)
    assert any("_mode_write" in str(t["key"]) for t in stream.data)

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files(tmp_path / "workers") == files(tmp_path / "threads") and n > 50


@pytest.mark.parametrize("named", [None, "threads"])
@pytest.mark.parametrize("writing", [False, True])
@pytest.mark.parametrize("configured", [None, 3])
def test_local_threads_are_one_a_core_from_any_thread(configured, writing, named):
    """dask's threads number cores + 4 when computed from a thread other than the main one
    (as `bigquant view` makes its levels); bigquant's computations keep to one a core, a
    quarter more for tasks that wait for their writes, or the ``num_workers`` the user set,
    whether the user named the threaded scheduler or not."""
    import dask

    from bigquant.progress import compute

    def who(_: int) -> int:
        time.sleep(0.05)  # long enough for every thread of the pool to take tasks
        return threading.get_ident()

    def threads_used(seen: list) -> int:
        seen.extend(compute(*map(dask.delayed(who), range(40)), writing=writing))
        return len(set(seen))

    cores = dask.system.CPU_COUNT
    expected = configured or cores + (-(-cores // 4) if writing else 0)
    with dask.config.set(num_workers=configured, scheduler=named):
        assert threads_used([]) == expected  # from the main thread
        elsewhere: list = []
        worker = threading.Thread(target=threads_used, args=(elsewhere,))
        worker.start()
        worker.join()
        assert len(set(elsewhere)) == expected
