"""Local paths and fsspec URLs (``s3://bucket/scan.tif``, ``file:///data/scan.zarr``) alike.

Every file bigquant reads or writes goes through here, so that sources and
stores can live on a shared filesystem or in an object store that every
worker reaches by the same name.
"""

from __future__ import annotations

import os
import posixpath


def is_url(location) -> bool:
    return isinstance(location, str) and "://" in location


def normalize(location) -> str:
    """An absolute local path, or the URL unchanged."""
    return location if is_url(location) else os.path.abspath(os.fspath(location))


def filesystem(location):
    """``(fsspec filesystem, path within it)``."""
    import fsspec

    return fsspec.core.url_to_fs(normalize(location))


def exists(location) -> bool:
    fs, path = filesystem(location)
    return fs.exists(path)


def isdir(location) -> bool:
    fs, path = filesystem(location)
    return fs.isdir(path)


def open_input(location):
    """A binary file object for reading."""
    fs, path = filesystem(location)
    return fs.open(path, "rb")


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


def remove(location) -> None:
    fs, path = filesystem(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def move(source, destination) -> None:
    """Rename on a filesystem; copy then delete on object stores."""
    fs, src = filesystem(source)
    _, dst = filesystem(destination)
    fs.mv(src, dst, recursive=True)


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
