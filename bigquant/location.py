"""Local paths and fsspec URLs (``s3://bucket/scan.tif``, ``file:///data/scan.zarr``) alike.

Every file bigquant reads or writes goes through here, so that sources and
stores can live on a shared filesystem or in an object store that every
worker reaches by the same name.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from .errors import BigquantError


def is_url(location) -> bool:
    return isinstance(location, str) and "://" in location


def normalize(location) -> str:
    """An absolute local path, or the URL unchanged."""
    return location if is_url(location) else os.path.abspath(os.fspath(location))


def filesystem(location):
    """``(fsspec filesystem, path within it)``; a one-line error where fsspec lacks a backend."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(normalize(location))
    except ImportError as exc:
        extra = " (pip install 'bigquant[s3]')" if str(location).startswith("s3://") else ""
        raise BigquantError(f"{location}: {exc}{extra}") from None


def _renames(fs) -> bool:
    """Whether ``fs`` moves a folder by renaming it: local filesystems, not object stores."""
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _is_s3(fs) -> bool:
    """Whether ``fs`` is s3fs, whose ``mode="create"`` writes only where no object is (S3's
    conditional write, ``If-None-Match: *``)."""
    return "s3" in fs.protocol


def creates_exclusively(location) -> bool:
    """Whether `create_exclusive` works at ``location``: a filesystem, or S3."""
    fs, _ = filesystem(location)
    return _renames(fs) or _is_s3(fs)


def create_exclusive(location, data: bytes) -> bool:
    """Create the file ``location`` holding ``data``, unless one exists there (then False).

    On S3 a conditional write. On a filesystem a hard link of a complete file,
    so that no one reads it half-written; an exclusive create where the
    filesystem has no hard links (some network and FUSE mounts).
    """
    fs, path = filesystem(location)
    if _is_s3(fs):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True
    draft = f"{path}.{os.getpid()}"
    with open(draft, "wb") as f:
        f.write(data)
    try:
        os.link(draft, path)
    except FileExistsError:
        return False
    except OSError:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    finally:
        os.remove(draft)
    return True


def read_bytes(location) -> bytes | None:
    """The bytes of the file ``location``, or None when there is none."""
    fs, path = filesystem(location)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def exists(location) -> bool:
    fs, path = filesystem(location)
    return fs.exists(path)


def isdir(location) -> bool:
    fs, path = filesystem(location)
    return fs.isdir(path)


def open_input(location):
    """A binary file object for reading, each read one request of just its bytes.

    No read-ahead: s3fs would fetch 50 MiB on every open and every seek, which
    for a TIFF read tile by tile pulled the whole file once per open (5 to 68
    times the file per compress). tifffile reads each tile, and each tag
    array, in one read.
    """
    fs, path = filesystem(location)
    return fs.open(path, "rb", cache_type="none")


def identity(location) -> dict:
    """Size and modification stamp: what tells a changed file from the one seen before."""
    fs, path = filesystem(location)
    info = fs.info(path)
    stamp = next((info[k] for k in ("mtime", "LastModified", "ETag", "created") if info.get(k)), "")
    return {"path": normalize(location), "size": int(info.get("size") or 0), "mtime": str(stamp)}


def name(location) -> str:
    return posixpath.basename(normalize(location).rstrip("/"))


def sibling(location, new_name: str) -> str:
    """``new_name`` in the folder (or prefix) holding ``location``."""
    loc = normalize(location).rstrip("/")
    return loc[: len(loc) - len(name(loc))] + new_name


def remove(location, *, first: tuple[str, ...] = ()) -> None:
    """Delete a file or folder; the files named in ``first`` (relative paths) before the rest."""
    fs, path = filesystem(location)
    if not fs.exists(path):
        return
    marks = [f"{path}/{name}" for name in first if fs.isfile(f"{path}/{name}")]
    if marks:
        fs.rm(marks)
    fs.rm(path, recursive=True)


def move(source, destination, *, last: tuple[str, ...] = ()) -> None:
    """Move a file or folder: a rename on a filesystem, a copy then a delete on object stores.

    An object store copies object by object, so the files named in ``last``
    (relative paths, e.g. the metadata that says a store is complete) are
    copied only once every other object is in place.
    """
    fs, src = filesystem(source)
    _, dst = filesystem(destination)
    if _renames(fs) or not fs.isdir(src):
        fs.mv(src, dst, recursive=True)
        return
    names = sorted(posixpath.relpath(f, src) for f in fs.find(src))
    for batch in ([n for n in names if n not in last], [n for n in names if n in last]):
        if batch:
            fs.copy([f"{src}/{n}" for n in batch], [f"{dst}/{n}" for n in batch])
    fs.rm(src, recursive=True)


def copied_from(source, destination) -> bool:
    """Whether every file under ``destination`` has a namesake under ``source`` (what a
    `move` cut short leaves behind), and there is at least one."""
    fs, src = filesystem(source)
    _, dst = filesystem(destination)
    if not fs.isdir(dst):
        return False
    theirs = {posixpath.relpath(f, dst) for f in fs.find(dst)}
    return bool(theirs) and theirs <= {posixpath.relpath(f, src) for f in fs.find(src)}


def upload(local_path: str, location) -> None:
    fs, path = filesystem(location)
    fs.put(local_path, path)


def size(location) -> int:
    """Bytes under ``location`` (a file, or everything in a folder)."""
    fs, path = filesystem(location)
    return int(fs.du(path, total=True)) if fs.isdir(path) else int(fs.size(path))


def zarr_store(location, *, read_only: bool):
    """What ``zarr.open_*`` takes for ``location``: the path, or an fsspec store for URLs."""
    if not is_url(location):
        return normalize(location)
    from zarr.storage import FsspecStore

    options = {"auto_mkdir": True} if location.startswith("file://") else {}
    return FsspecStore.from_url(location, storage_options=options, read_only=read_only)


class HandleCache:
    """Open files kept for reuse, at most ``size`` of them; what is evicted gets closed.

    A handle is borrowed with `borrow` and closed on eviction only once no
    thread is using it, so a long-lived worker that reads many files holds a
    bounded number of them open.
    """

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.Lock()
        # key -> [handle, what closes it, users]
        self._open: OrderedDict[tuple, list] = OrderedDict()

    @contextlib.contextmanager
    def borrow(
        self, key: tuple, opener: Callable[[], tuple[object, Callable[[], None]]]
    ) -> Iterator[object]:
        """The handle for ``key``, kept open while in use.

        ``opener`` opens it, returning the handle and what closes it.
        """
        with self._lock:
            entry = self._open.get(key)
            if entry is not None:
                entry[2] += 1
                self._open.move_to_end(key)
        if entry is None:
            # Opened outside the lock: on an object store that takes requests, which must not
            # hold up the threads reading other files.
            handle, close = opener()
            with self._lock:
                entry = self._open.setdefault(key, [handle, close, 0])
                entry[2] += 1
                self._evict()
            if entry[1] is not close:  # another thread opened it meanwhile
                close()
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[2] -= 1
                self._evict()

    def _evict(self) -> None:
        for key in [k for k, (_, _, users) in self._open.items() if not users]:
            if len(self._open) <= self.size:
                break
            self._open.pop(key)[1]()

    def __len__(self) -> int:
        return len(self._open)
