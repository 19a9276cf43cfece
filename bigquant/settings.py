"""What a run is asked for: the one definition of the options that shape a store.

`Settings` is the single source. `compress` takes its fields as keywords and
`compress_many` passes them on; a resumed run must match its `Settings.identity`,
which the store records as ``StoreMeta.run``; the ``compress`` command's
options are made from its fields (`bigquant.options.settings`). A new option is
a field here, a parameter of `compress`, and the kernel that uses it: a test
checks that each field is a parameter of `compress` and an option of the command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import defaults, location
from .errors import ParameterError


def _option(default, *, run: str | None = None):
    """A field of `Settings`; ``run``: its key in `Settings.identity` where that differs."""
    return dataclasses.field(default=default, metadata={"run": run} if run else {})


@dataclass(frozen=True)
class Settings:
    """The options of a run that decide its store (see `compress` for each).

    The fields' order is the order of `identity`'s keys, as stores record them.

    Parameters
    ----------
    n_colors : int
        K, the colours asked for.
    seed : int
        Seeds the sample and the k-means init.
    sample_size : int
        Pixels the codebook is fitted on.
    max_iter : int
        Bound on Lloyd iterations.
    space : {"rgb", "oklab", "lab"}
        Colour space of the fit and the assignment.
    dither : {None, "ordered", "floyd-steinberg"}
        Dithering of the labels.
    pyramid : bool
        Also write halved label levels.
    chunks : int, optional
        Target chunk side when the source is a file.
    zarr_format : {3, 2}
        Zarr format of the store.

    Examples
    --------
    >>> from bigquant.settings import Settings
    >>> Settings(n_colors=16).identity_names()["n_colors_requested"]
    '`n_colors`'
    """

    n_colors: int = _option(defaults.COLORS, run="n_colors_requested")
    seed: int = _option(defaults.SEED)
    sample_size: int = _option(defaults.SAMPLE, run="sample_size_requested")
    max_iter: int = _option(defaults.MAX_ITER)
    space: str = _option(defaults.SPACES[0])
    dither: str | None = _option(None)
    pyramid: bool = _option(False)
    #: Recorded as the chunking the labels got (`identity`), not as asked.
    chunks: int | None = _option(None)
    zarr_format: int = _option(defaults.ZARR_FORMATS[0])

    def check(self) -> None:
        """Refuse what is wrong whatever the image (before any file is opened).

        Raises
        ------
        ParameterError
            ``n_colors``, ``sample_size``, ``max_iter`` or ``zarr_format``
            out of range (``chunks`` is checked by `open_image`).
        """
        from .fit import check_fit
        from .store import check_zarr_format

        check_fit(self.n_colors, self.sample_size, self.max_iter)
        check_zarr_format(self.zarr_format)

    def check_image(self, data, nodata: float | None) -> None:
        """Refuse what this image cannot have.

        Parameters
        ----------
        data : dask.array.Array
            The ``(Y, X, C)`` pixels.
        nodata : float, optional
            The image's nodata value.

        Raises
        ------
        ParameterError
            A ``space`` or ``dither`` the image cannot take, or 65536 colours
            with nodata.
        """
        from .kernels.color import check_space
        from .kernels.dither import check_dither

        check_space(self.space, data.shape[2], data.dtype)
        check_dither(self.dither, data.shape[2], data.dtype, self.space, self.n_colors)
        if nodata is not None and self.n_colors == defaults.MAX_COLORS:
            raise ParameterError(
                f"`n_colors` can be at most {defaults.MAX_COLORS - 1} for an image with nodata "
                "(one more label is reserved for it)"
            )

    def identity(self, source: str | None, data, colors=None) -> dict:
        """What a resumed run must share with the run it finishes: ``StoreMeta.run``.

        Parameters
        ----------
        source : str or None
            The source file (None for an array).
        data : dask.array.Array
            The pixels as the labels are chunked.
        colors : numpy.ndarray, optional
            A given codebook.

        Returns
        -------
        dict
            The given codebook's token and the source file's identity, then
            every field (``chunks`` as the labels' chunk sides).
        """
        from dask.base import tokenize

        values = {
            "codebook": None if colors is None else tokenize(colors),
            "source": None if source is None else location.identity(source),
        }
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "chunks":
                value = [data.chunks[0][0], data.chunks[1][0]]
            values[field.metadata.get("run", field.name)] = value
        return values

    @classmethod
    def identity_names(cls) -> dict[str, str]:
        """How an error names each key of `identity`: parameters in backticks (the CLI
        shows their flags).

        Returns
        -------
        dict
            Key of `identity` to its name in words.
        """
        return {
            "codebook": "`codebook`",
            "source": "source file",
            **{f.metadata.get("run", f.name): f"`{f.name}`" for f in dataclasses.fields(cls)},
        }
