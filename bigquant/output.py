"""One owner for an output's life: where it is written, who writes it, what it may replace.

`Output` is every writer's way to its output (stores, TIFF and Zarr images,
PNGs, tile sets): the run claims it (``.NAME.lock``), writes it at
``.NAME.partial`` and moves it into place only once complete; an existing
output is replaced only with ``overwrite``, and only if it is of the kind the
command writes; what a run left unfinished is kept for a resume or removed.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import posixpath
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import location
from .errors import BigquantError, ClusterError, ParameterError
from .store import ATTR_KEY, ROOT_METADATA

log = logging.getLogger("bigquant")


class Output:
    """The output at ``dst``, of ``kind``: its partial location, its claim, its replacement.

    Parameters
    ----------
    dst : path-like or URL
        Where the output goes.
    kind : {"store", "zarr", "tiff", "png"}, optional
        What it is (`OUTPUT_KINDS`): all ``overwrite`` may replace at ``dst``
        (`check_absent`). None for an output whose writer decides that itself
        (a tile set) and only claims it.

    Attributes
    ----------
    dst : str
        ``dst``, normalized (`location.normalize`).
    partial : str
        ``.NAME.partial`` beside it: where it is written until complete.
    lock : str
        ``.NAME.lock`` beside it: the claim of the run writing it.
    """

    def __init__(self, dst, kind: str | None = None):
        self.dst = location.normalize(dst)
        self.kind = kind
        name = location.name(self.dst)
        self.partial = location.sibling(self.dst, f".{name}.partial")
        self.lock = location.sibling(self.dst, f".{name}.lock")

    def left_by_a_cut_move(self) -> bool:
        """Whether all there is at ``dst`` is what a move of ``partial`` cut short left there.

        Objects of the output at ``partial``, and not its root metadata, which
        goes last (`write`): no one's output, which a resumed run may replace.
        """
        return location.copied_from(self.partial, self.dst) and not any(
            location.exists(f"{self.dst}/{name}") for name in ROOT_METADATA
        )

    def check_absent(self, overwrite: bool) -> None:
        """Refuse an existing ``dst`` unless ``overwrite`` and it is of this output's kind.

        An output of another kind (a folder of someone's files, a text file)
        is never replaced, ``overwrite`` or not.
        """
        dst = self.dst
        if not location.exists(dst):
            return
        if not overwrite:
            raise ParameterError(f"{dst} already exists (use `overwrite` to replace it)")
        what, is_one = OUTPUT_KINDS[self.kind]
        fs, path = location.filesystem(dst)
        if fs.isdir(path):
            entries = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
            if entries and not is_one(dst, fs, path):
                shown = ", ".join(entries[:3]) + (
                    f" and {len(entries) - 3} more" if len(entries) > 3 else ""
                )
                raise ParameterError(
                    f"{dst} is a folder holding {shown}, not {what}: `overwrite` replaces only "
                    f"{what}; nothing was deleted"
                )
        elif not is_one(dst, fs, path):
            raise ParameterError(
                f"{dst} is a file that is not {what}: `overwrite` replaces only {what}; "
                "nothing was deleted"
            )

    @contextlib.contextmanager
    def claim(self, *, take_stale: bool) -> Iterator[Claim | None]:
        """Hold the exclusive claim on writing ``dst`` for the block; release it after.

        The claim is the file ``lock``, created atomically where none is
        (`location.create_exclusive`) and holding the run's pid, host and
        start time. A second run into the same output raises a
        `BigquantError` at once, naming the run that holds it. A claim left
        by a run that is gone (its pid no longer runs on this host) is taken
        over if ``take_stale``, else refused as well. Claiming an output
        already claimed in this context does nothing (and yields None, as for
        outputs not claimed; otherwise the block gets the `Claim`). Outputs on
        an object store without conditional writes (anything but S3) are not
        claimed.
        """
        dst, lock, held = self.dst, self.lock, _held.get()
        if dst in held or not location.creates_exclusively(lock):
            yield None
            return
        parent = location.sibling(dst, "")
        if not location.is_url(dst) and not location.isdir(parent):
            raise BigquantError(f"{parent}: no such directory")
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        while not location.create_exclusive(lock, json.dumps(mine).encode()):
            holder = _holder(lock)
            if holder is None:
                continue  # released meanwhile
            if not (take_stale and _gone(holder)):
                raise _claimed(dst, lock, holder)
            # Unless another run took it over first (and holds it now): then the loop refuses.
            if _holder(lock) == holder:
                log.warning(
                    "taking over the claim of a run that is gone (pid %s on host %s since %s)",
                    holder.get("pid"), holder.get("host"), holder.get("since"),
                )  # fmt: skip
                location.remove(lock)
        token = _held.set(held | {dst})
        handle = Claim(lock, mine)
        try:
            yield handle
        finally:
            _held.reset(token)
            if not handle.kept:
                handle.release()

    @contextlib.contextmanager
    def write(
        self, *, overwrite: bool = False, resumable: bool = False, move: bool = True
    ) -> Iterator[str]:
        """Yield ``partial`` to write the output into; move it to ``dst`` on success.

        The run holds the claim (`claim`) throughout. An existing ``dst`` is
        refused unless ``overwrite`` and it is of this kind (`check_absent`),
        and is only replaced once the new output is complete (by a rename on
        filesystems, a copy on object stores). On a `BigquantError` (bad
        input) the partial output is removed. On an interrupt, lost workers
        (`ClusterError`) or any other failure it is removed too, unless
        ``resumable``: then it is kept for a later run to resume, and a stale
        one is left for the caller to reuse or clear.

        On an object store the replacement is a copy: the old output's root
        metadata is deleted first and the new one's copied last, so at every
        moment ``dst`` is the old output, the new one, or one that
        `open_store` refuses; never a store that reads as complete with
        objects missing. Without ``move``, a block that ends without error
        leaves the output at ``partial``, for a later task to `move_into_place`.
        """
        tmp = self.partial
        with self.claim(take_stale=overwrite or not resumable):
            # What a move of this partial output cut short left at `dst` is no one's: replaced.
            if not (resumable and self.left_by_a_cut_move()):
                self.check_absent(overwrite)
            if not resumable:
                location.remove(tmp)
            try:
                yield tmp
            except BaseException as exc:
                bad_input = isinstance(exc, BigquantError) and not isinstance(exc, ClusterError)
                if resumable and not bad_input and location.exists(tmp):
                    log.warning(
                        "kept the unfinished output in %s: resume the run (--resume, or "
                        "resume=True) to finish it",
                        tmp,
                    )
                else:
                    location.remove(tmp)
                raise
            if move:
                self.move_into_place()

    def move_into_place(self) -> None:
        """Replace ``dst`` by the complete output at ``partial`` (see `write`)."""
        location.remove(self.dst, first=ROOT_METADATA)
        location.move(self.partial, self.dst, last=ROOT_METADATA)


@dataclass
class Claim:
    """A run's claim on an output (see `Output.claim`): the claim file and what it holds.

    Picklable, so that the task finishing a deferred run (``compute=False``)
    can release it where it runs: `keep` stops `Output.claim` releasing it.
    """

    lock: str
    mine: dict
    kept: bool = False

    def keep(self) -> Claim:
        """Hold the claim past the `Output.claim` block, until `release` is called."""
        self.kept = True
        return self

    def release(self) -> None:
        """Remove the claim file, if it is still this run's."""
        if _holder(self.lock) == self.mine:
            location.remove(self.lock)


def _is_bigquant_store(dst: str, fs, path: str) -> bool:
    """A Zarr group with the ``bigquant`` attribute, finished or not."""
    import zarr

    try:
        group = zarr.open_group(location.zarr_store(dst, read_only=True), mode="r")
    except Exception:
        return False
    return ATTR_KEY in group.attrs


def _is_zarr_array(dst: str, fs, path: str) -> bool:
    import zarr

    try:
        zarr.open_array(location.zarr_store(dst, read_only=True), mode="r")
    except Exception:
        return False
    return True


def _starts_with(*magics: bytes):
    """Whether a file's first bytes are one of ``magics`` (a file format's signature)."""

    def check(dst: str, fs, path: str) -> bool:
        if fs.isdir(path):
            return False
        with fs.open(path, "rb") as f:
            head = f.read(max(map(len, magics)))
        return any(head.startswith(m) for m in magics)

    return check


#: What each kind of output is, in words, and how to tell one: what ``overwrite`` may replace.
OUTPUT_KINDS = {
    "store": ("a bigquant store", _is_bigquant_store),
    "zarr": ("a Zarr array", _is_zarr_array),
    # Classic TIFF and BigTIFF, little- and big-endian.
    "tiff": ("a TIFF file", _starts_with(b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")),
    "png": ("a PNG file", _starts_with(b"\x89PNG\r\n\x1a\n")),
}


#: The outputs claimed in this context: `compress` claims its store before it looks for one to
#: resume, and `Output.write` inside it claims it again (`compress_many`, each of its stores).
_held: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "bigquant_claims", default=frozenset()
)


def _holder(lock: str) -> dict | None:
    """What a claim file says (``{}`` if unreadable), or None when there is none."""
    text = location.read_bytes(lock)
    if text is None:
        return None
    try:
        held = json.loads(text)
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def _gone(holder: dict) -> bool:
    """Whether the run holding a claim is known to be gone: its pid runs no more on this host."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


def _claimed(dst: str, lock: str, holder: dict) -> BigquantError:
    who = (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"since {holder.get('since', '?')}"
    )
    if _gone(holder):
        return ParameterError(
            f"{location.name(dst)} was being written by a run that is gone ({who}): resume it "
            f"(`resume`) or start afresh (`overwrite`)"
        )
    return BigquantError(
        f"{location.name(dst)} is being written by another run ({who}); wait for it, "
        f"or remove {lock} if that run is gone"
    )
