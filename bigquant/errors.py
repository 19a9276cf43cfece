"""The one exception type bigquant raises for problems the user can fix."""


class BigquantError(Exception):
    """Bad input or a failed step, with a message fit to show the user as is.

    The CLI prints it on one line and exits non-zero, without a traceback.
    """
