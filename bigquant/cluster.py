"""Where the work runs: dask's threads in this process, local worker processes, or a cluster.

bigquant never schedules anything itself: inside `scheduler`, every dask
computation goes to the chosen ``distributed.Client`` (for local worker
processes, from `ready` on).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .errors import BigquantError, ParameterError

log = logging.getLogger("bigquant")

#: The only address a local cluster's scheduler, workers and dashboard listen on.
LOOPBACK = "127.0.0.1"

#: How long to wait for a scheduler before giving up.
CONNECT_TIMEOUT = "10s"

#: The libraries' loggers whose records are notices about the input (tifffile's) or the code
#: (Python warnings, through ``logging.captureWarnings``): the `bigquant` command shows them
#: only with -v, and local worker processes forward theirs to the client for that.
NOTICE_LOGGERS = ("tifffile", "py.warnings")


#: What a label task needs, imported by each local worker as it starts rather than on its
#: first task: the cluster starts during the fit. None of them imports dask.array, which
#: only the client needs, to build graphs: with xarray, pandas and sparse it made a
#: worker's imports 4.5-4.7 s of CPU instead of 1.8-2.0 s. TIFF chunks are read by plain
#: indexing of `bigquant.read.tiff.TiffSource`. This module is one for its `dask_setup`.
_WORKER_MODULES = ["bigquant.read.tiff", "bigquant.write", "zarr", __name__]


def dask_setup(worker) -> None:
    """Set up a local worker process as it starts (distributed runs this for a preload).

    Python warnings go to the ``py.warnings`` logger, which `ready` forwards
    to this process. Ctrl-C is left to the client: a terminal sends it to every
    process of its group, and each worker would print a traceback while the
    client closes the cluster anyway.
    """
    logging.captureWarnings(True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class _Starting:
    """A local cluster starting in the background, and its client once `ready` made one."""

    workers: int
    cluster: Future
    client: object | None = None


_starting: contextvars.ContextVar[_Starting | None] = contextvars.ContextVar(
    "bigquant_starting", default=None
)


@contextlib.contextmanager
def scheduler(client=None, *, workers: int | None = None) -> Iterator[None]:
    """Run the dask computations inside the block on a cluster, or on threads.

    With ``workers``, the local cluster starts in the background: until
    `ready` is called, computations run on this process's threads (the fit
    does, while the worker processes start on the same machine's cores).

    Parameters
    ----------
    client : distributed.Client, str or None
        A client, or the address of a running scheduler (``tcp://host:8786``).
        None: ``workers`` local processes if given, else dask's threads here.
    workers : int, optional
        Start a local cluster of this many single-threaded worker processes.
    """
    if client is None and workers is None:
        yield
        return
    if client is not None and workers is not None:
        raise ParameterError("give either `client` or `workers`, not both")
    from distributed import Client

    if isinstance(client, Client):
        _announce(client)
        with client.as_current():
            yield
        return
    if workers is not None:
        if workers < 1:
            raise ParameterError(f"`workers` must be at least 1, not {workers}")
        with _local_cluster(workers):
            yield
        return
    try:
        remote = Client(client, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise BigquantError(
            f"cannot reach the dask scheduler at {client} within {CONNECT_TIMEOUT}: {exc}"
        ) from None
    with remote:
        _announce(remote)
        yield


@contextlib.contextmanager
def _local_cluster(workers: int) -> Iterator[None]:
    """Start a local cluster of ``workers`` processes in a background thread, for `ready` to
    wait on; close it (once started) when the block ends."""
    import dask
    from distributed import LocalCluster

    # distributed gives worker processes MALLOC_TRIM_THRESHOLD_=65536 (to hand memory back
    # to the OS), which also turns glibc's mmap threshold static: every array above 128 KiB
    # is then mapped, page-faulted and unmapped afresh. That made filling a colour table
    # 3x slower on a worker than here (1.2 s against 3.4 s): leave glibc its defaults.
    environ = {
        k: v
        for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
        if k != "MALLOC_TRIM_THRESHOLD_"
    }
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        pool = ThreadPoolExecutor(1, thread_name_prefix="bigquant-cluster")
        future = pool.submit(
            LocalCluster,
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            # Loopback only: on a shared machine anyone could otherwise watch the run's tasks
            # and file names on the dashboard, whose default (":8787") is every interface.
            host=LOOPBACK,
            dashboard_address=f"{LOOPBACK}:0",
            preload=_WORKER_MODULES,
            # LocalCluster's default, warnings (a level for its nannies, here and in the
            # workers), unless this process has turned distributed's logs down further.
            silence_logs=max(logging.WARNING, logging.getLogger("distributed").getEffectiveLevel()),
        )
        pool.shutdown(wait=False)
        starting = _Starting(workers, future)
        token = _starting.set(starting)
        try:
            yield
        finally:
            _starting.reset(token)
            if starting.client is not None:
                starting.client.close()
            # A cluster that failed to start has nothing to close.
            if future.exception() is None:
                future.result().close()


def ready():
    """The ``distributed.Client`` computations go to from here on, or None (threads).

    Waits for a local cluster that `scheduler` is still starting, and makes
    its client the current one; until this is called, computations inside
    that `scheduler` block run on this process's threads.
    """
    starting = _starting.get()
    if starting is None or starting.client is not None:
        return current_client()
    from distributed import Client

    try:
        cluster = starting.cluster.result()
    except Exception as exc:
        # distributed's own message ("Nanny failed to start.") is not the reason; the
        # exception in the worker process it was raised from is.
        while exc.__cause__ is not None:
            exc = exc.__cause__
        raise BigquantError(
            f"the {starting.workers} local worker processes did not start: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    client = starting.client = Client(cluster)
    # The workers' library notices (tifffile's logger, Python warnings) are handled by this
    # process's loggers, as they are on threads: the `bigquant` command shows them only
    # with -v. Left alone, a worker prints them to the stderr it shares with this process.
    for name in NOTICE_LOGGERS:
        client.forward_logging(name)
    _announce(client)
    return client


def current_client():
    """The ``distributed.Client`` dask computations go to now, or None (threads)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _announce(client) -> None:
    n_workers = len(client.scheduler_info().get("workers", {}))
    log.info(
        "running on %s (%d workers); dashboard: %s",
        client.scheduler.address,
        n_workers,
        client.dashboard_link,
    )
