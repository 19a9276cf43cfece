"""The exceptions bigquant raises for problems the user can fix."""

from __future__ import annotations

import re
from collections.abc import Callable


class BigquantError(Exception):
    """Bad input or a failed step, with a message fit to show the user as is.

    The CLI prints it on one line and exits non-zero, without a traceback.
    """


class ClusterError(BigquantError):
    """Work lost where it ran (worker processes that died), not bad input: a run that
    fails with it keeps its unfinished output to resume."""


class ParameterError(BigquantError, ValueError):
    """A bad argument. The message names parameters in backticks (``\\`n_colors\\```).

    Python callers read the parameter names; the CLI shows its flags in their
    place (`render`), so the library never speaks in flags.
    """

    _NAME = re.compile(r"`(\w+)`")

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def render(self, name: Callable[[str], str | None]) -> str:
        """The message with each parameter shown as ``name(parameter)`` (kept where None)."""
        return self._NAME.sub(lambda m: name(m[1]) or m[0], self.message)
