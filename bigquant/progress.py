"""Progress bars on stderr for dask computations run by the local schedulers."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from dask.callbacks import Callback


class _TqdmCallback(Callback):
    """Counts finished dask tasks on a tqdm bar."""

    def __init__(self, description: str):
        super().__init__()
        self._description = description
        self._bar = None

    def _start_state(self, dsk, state):
        from tqdm import tqdm

        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self._bar = tqdm(
            total=total,
            desc=self._description,
            unit="task",
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def _posttask(self, key, result, dsk, state, worker_id):
        self._bar.update(1)

    def _finish(self, dsk, state, errored):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def progress(description: str, enabled: bool) -> Iterator[None]:
    """Show a bar for the dask computations inside the block when ``enabled``."""
    if not enabled:
        yield
        return
    with _TqdmCallback(description):
        yield


def default_enabled(quiet: bool) -> bool:
    """Bars only for a person watching: not with -q, not when stderr is not a terminal."""
    return not quiet and sys.stderr.isatty()
