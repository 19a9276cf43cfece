"""Where the work runs: dask's threads in this process, local worker processes, or a cluster.

bigquant never schedules anything itself: inside `scheduler`, every dask
computation goes to the chosen ``distributed.Client``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from .errors import BigquantError, ParameterError

log = logging.getLogger("bigquant")

#: How long to wait for a scheduler before giving up.
CONNECT_TIMEOUT = "10s"


@contextlib.contextmanager
def scheduler(client=None, *, workers: int | None = None) -> Iterator[object | None]:
    """Run the dask computations inside the block on a cluster, or on threads.

    Parameters
    ----------
    client : distributed.Client, str or None
        A client, or the address of a running scheduler (``tcp://host:8786``).
        None: ``workers`` local processes if given, else dask's threads here.
    workers : int, optional
        Start a local cluster of this many single-threaded worker processes.

    Yields
    ------
    The ``distributed.Client`` in use, or None for threads.
    """
    if client is None and workers is None:
        yield None
        return
    if client is not None and workers is not None:
        raise ParameterError("give either `client` or `workers`, not both")
    import dask
    from distributed import Client, LocalCluster

    if isinstance(client, Client):
        _announce(client)
        with client.as_current():
            yield client
        return
    if workers is not None:
        if workers < 1:
            raise ParameterError(f"`workers` must be at least 1, not {workers}")
        # distributed gives worker processes MALLOC_TRIM_THRESHOLD_=65536 (to hand memory back
        # to the OS), which also turns glibc's mmap threshold static: every array above 128 KiB
        # is then mapped, page-faulted and unmapped afresh. That made filling a colour table
        # 3x slower on a worker than here (1.2 s against 3.4 s): leave glibc its defaults.
        environ = {
            k: v
            for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
            if k != "MALLOC_TRIM_THRESHOLD_"
        }
        with (
            dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as local,
        ):
            _announce(local)
            yield local
        return
    try:
        remote = Client(client, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise BigquantError(
            f"cannot reach the dask scheduler at {client} within {CONNECT_TIMEOUT}: {exc}"
        ) from None
    with remote:
        _announce(remote)
        yield remote


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
