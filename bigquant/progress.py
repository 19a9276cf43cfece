"""Progress bars on stderr for dask computations, on threads or on a distributed cluster.

The pipeline marks a stage with ``with progress("labelling", enabled)``; the
stages compute through `compute`, which draws the bar: by counting finished
tasks on the local schedulers, or finished futures on a ``distributed.Client``.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator

import dask
import dask.base
import dask.local
import dask.threaded
from dask.system import CPU_COUNT

from .cluster import current_client
from .errors import ClusterError

_stage: contextvars.ContextVar[str | None] = contextvars.ContextVar("bigquant_stage", default=None)
_BAR = {"unit": "task", "leave": False, "dynamic_ncols": True}


@contextlib.contextmanager
def progress(description: str, enabled: bool) -> Iterator[None]:
    """Show a bar named ``description`` for what `compute` runs inside the block."""
    token = _stage.set(description if enabled else None)
    try:
        yield
    finally:
        _stage.reset(token)


def compute(*tasks, writing: bool = False):
    """``dask.compute(*tasks)``, with a progress bar inside an enabled `progress` block.

    Every bigquant computation goes through here: on the current
    ``distributed.Client`` if there is one, else as `local_options` says.

    Parameters
    ----------
    *tasks : dask collections or Delayed
        What to compute.
    writing : bool
        The tasks wait for Zarr to encode and store what they write (on threads
        of its own): on dask's threads, `local_options` then gives more threads
        than cores.

    Returns
    -------
    tuple
        The results, as ``dask.compute`` returns them.

    Raises
    ------
    ClusterError
        When the cluster gave a task up because the workers running it died
        (distributed's ``KilledWorker``, whose message is a paragraph).
    """
    client = current_client()
    description = _stage.get()
    if client is None:
        if description is None:
            return dask.compute(*tasks, **local_options(writing))
        from tqdm import tqdm
        from tqdm.dask import TqdmCallback

        with TqdmCallback(tqdm_class=tqdm, desc=description, file=sys.stderr, **_BAR):
            return dask.compute(*tasks, **local_options(writing))
    from distributed import KilledWorker

    try:
        return _on_cluster(client, tasks, description)
    except KilledWorker as exc:
        n, last = exc.allowed_failures + 1, exc.last_worker.address
        who = f"the worker process at {last} died"
        if n > 1:
            who = f"{n} worker processes died in turn, the last at {last},"
        raise ClusterError(
            f"{who} running task {exc.task!r}; the usual cause is a worker running out of memory"
        ) from None


def local_options(writing: bool = False) -> dict:
    """``dask.compute``'s (and ``dask.config.set``'s) ``scheduler`` and ``num_workers`` for
    a computation without a client: the scheduler the user set with
    ``dask.config.set(scheduler=...)``, else dask's threads, one a core.

    Named here rather than left to dask: with no scheduler named, dask imports
    distributed to look for a client (1-2.5 s here, in every command), and
    `compute` has already looked. And dask's threads number one a core only when
    computed from the main thread; from another (`bigquant.view` makes its label
    levels in one) they number Python's default, cores + 4, which on 2 cores made the
    viewer's first level 10-50 % slower.

    Parameters
    ----------
    writing : bool
        Threads a quarter more than cores, rounded up. A label task waits about a
        fifth of its time for Zarr's encoder threads; on 2 cores, 3 threads kept the
        cores 1.88 busy in the label pass of the 1 GP benchmark mosaic against 1.73
        with 2, and it took 8.0-8.3 s against 8.5-8.8 (interleaved runs).

    Returns
    -------
    dict
        ``scheduler``, and ``num_workers`` on dask's threads (``"threads"`` named
        or not); a ``num_workers`` the user set is kept.
    """
    scheduler, runs = _local_scheduler()
    if runs is not dask.threaded.get:
        return {"scheduler": scheduler}
    threads = CPU_COUNT + (-(-CPU_COUNT // 4) if writing else 0)
    return {"scheduler": scheduler, "num_workers": dask.config.get("num_workers", None) or threads}


def computes_here() -> bool:
    """Whether computations now run in this process: on dask's threads or its synchronous
    scheduler, not on a cluster or in other processes."""
    if current_client() is not None:
        return False
    return _local_scheduler()[1] in (dask.threaded.get, dask.local.get_sync)


def _local_scheduler() -> tuple:
    """The scheduler set with ``dask.config`` (a name or a function), else dask's threads;
    and the function that runs it."""
    scheduler = dask.config.get("scheduler", None) or dask.threaded.get
    return scheduler, dask.base.named_schedulers.get(scheduler, scheduler)


def _on_cluster(client, tasks, description: str | None) -> tuple:
    """``dask.compute(*tasks)`` on ``client``, with a bar of the scheduler's finished tasks
    (every task the futures depend on, as the threads' bar counts) if described."""
    if description is None:
        return dask.compute(*tasks)  # on ``client``, the current one
    from distributed.diagnostics.progressbar import ProgressBar
    from tqdm import tqdm

    class _Bar(ProgressBar):
        def _draw_bar(self, remaining: int, all: int, **kwargs) -> None:
            bar.total, bar.n = all, all - remaining
            bar.refresh()

    futures = client.compute(list(tasks))
    with tqdm(total=None, desc=description, file=sys.stderr, **_BAR) as bar:
        client.sync(_Bar(futures, scheduler=client.scheduler.address).listen)
    return tuple(client.gather(futures))


def default_enabled(quiet: bool) -> bool:
    """Bars only for a person watching: not with -q, not when stderr is not a terminal."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def on_worker() -> Iterator[None]:
    """Inside a task on a ``distributed`` worker, send the computations of the block to its
    cluster (from a thread that leaves the worker's pool meanwhile); elsewhere, do nothing."""
    if "distributed" not in sys.modules:
        yield
        return
    from distributed import get_worker, worker_client

    try:
        get_worker()
    except ValueError:
        yield
        return
    with worker_client() as client, client.as_current():
        yield
