"""The exceptions bigquant raises for problems the user can fix."""

from __future__ import annotations

import re
from collections.abc import Callable


class BigquantError(Exception):
    """Bad input or a failed step, with a message fit to show the user as is.

    The CLI prints it on one line and exits non-zero, without a traceback.
    `ParameterError` and `ClusterError` are subclasses, so
    ``except bigquant.BigquantError`` catches them too.

    Examples
    --------
    >>> import bigquant
    >>> try:
    ...     bigquant.open_store("/no/such/scan.zarr")
    ... except bigquant.BigquantError as exc:
    ...     print(exc)
    /no/such/scan.zarr: no such file or directory
    """


class ClusterError(BigquantError):
    """Work lost where it ran (worker processes that died), not bad input.

    A `compress` run of a file that fails with it keeps its unfinished store in
    ``.DST.partial``; run it again with ``resume=True`` to finish it. The
    usual cause is a worker running out of memory: fewer or larger workers,
    or smaller ``chunks``, help.

    Examples
    --------
    >>> import bigquant
    >>> try:  # doctest: +SKIP
    ...     bigquant.compress("scan.tif", "scan.zarr", workers=8)
    ... except bigquant.ClusterError:
    ...     bigquant.compress("scan.tif", "scan.zarr", workers=4, resume=True)
    """


class ParameterError(BigquantError, ValueError):
    """A bad argument; the message names each parameter in backticks.

    As in ``"`n_colors` must be at least 1, not 0"``: Python callers read
    the parameter names; the CLI shows its flags in their place (`render`),
    so the library never speaks in flags. It is also a `ValueError`, which
    is what code that knows nothing of bigquant catches.

    Parameters
    ----------
    message : str
        What is wrong, each parameter named in backticks.

    Attributes
    ----------
    message : str
        The message as given, parameter names still in backticks.

    Examples
    --------
    >>> import bigquant
    >>> error = bigquant.ParameterError("`n_colors` must be at least 1, not 0")
    >>> error.message
    '`n_colors` must be at least 1, not 0'
    >>> isinstance(error, ValueError)
    True
    """

    _NAME = re.compile(r"`(\w+)`")

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def render(self, name: Callable[[str], str | None]) -> str:
        """The message with each parameter shown as ``name(parameter)`` (kept where None).

        Parameters
        ----------
        name : callable
            Takes a parameter name (``"n_colors"``) and returns how to show it
            (``"--colors"``), or None to keep it as it is, in backticks.

        Returns
        -------
        str
            The message, each backticked parameter name replaced.

        Examples
        --------
        >>> import bigquant
        >>> error = bigquant.ParameterError("`n_colors` must be at least 1, not 0")
        >>> error.render(lambda parameter: "--colors" if parameter == "n_colors" else None)
        '--colors must be at least 1, not 0'
        """
        return self._NAME.sub(lambda m: name(m[1]) or m[0], self.message)
