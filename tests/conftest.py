"""Shared fixtures: real photographs from scikit-image and scikit-learn, written as TIFFs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile


def photo(name: str) -> np.ndarray:
    """A real RGB photograph shipped inside scikit-image or scikit-learn (no download)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    return getattr(skimage.data, name)()


@pytest.fixture(scope="session")
def china() -> np.ndarray:
    return photo("china")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return photo("astronaut")


def write_tiff(path, image: np.ndarray, *, tile=(128, 128), **kwargs):
    """Write ``image`` as a TIFF: tiled by default, striped with ``tile=None, rowsperstrip=N``."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        kwargs.setdefault("photometric", "rgb")
    elif image.ndim == 3:
        kwargs.setdefault("photometric", "minisblack")
        kwargs.setdefault("planarconfig", "contig")
    kwargs.setdefault("compression", "zlib")
    tifffile.imwrite(path, image, tile=tile, metadata=None, **kwargs)
    return path


def damage_software_tag(src, dst):
    """Write TIFF ``src`` to ``dst`` with its Software tag claiming 100 MB of text: the
    pixels stay readable, and tifffile logs a notice wherever the file is opened."""
    import struct

    with tifffile.TiffFile(src) as tif:
        offset = tif.pages[0].tags[305].offset
    damaged = bytearray(open(src, "rb").read())
    struct.pack_into("<I", damaged, offset + 4, 10**8)
    with open(dst, "wb") as f:
        f.write(damaged)
    return dst


@pytest.fixture
def china_tif(tmp_path, china):
    return write_tiff(tmp_path / "china.tif", china)


def made_up_meta(shape, codebook: np.ndarray, nodata: float | None = None, **fields):
    """The metadata of a store of made-up labels, for cases no photograph gives."""
    from bigquant.store import SourceInfo, StoreMeta

    codebook = np.asarray(codebook)
    shape = [*shape[:2], codebook.shape[1]]
    source = SourceInfo(None, shape, str(codebook.dtype), "rgb", nodata=nodata)
    defaults = dict(
        n_colors_requested=len(codebook), n_colors=len(codebook), seed=0, sample_size=0,
        max_iter=0, space="rgb", dither=None, n_iter=0, run={}, complete=True, mse=0.0,
    )  # fmt: skip
    return StoreMeta(source=source, **{**defaults, **fields})


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run the ``bigquant`` command in this process (click's CliRunner), as a shell would.

    Returns what `run_cli` does. An exception the command lets escape is raised
    here, with its traceback: the real command would have printed one.
    """
    from click.testing import CliRunner

    from bigquant.cli import main

    args = [str(a) for a in args]
    result = CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def run_cli(*args, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``bigquant`` entry point in a fresh process.

    Only where a process matters (the entry point, signals, memory, clusters):
    `cli` runs the same command in-process, without paying the imports again.
    """
    return subprocess.run(
        [sys.executable, "-m", "bigquant", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def two_writers(tmp_path, *args) -> tuple[str, str, dict, dict]:
    """Start two ``bigquant`` runs of ``args`` together, as a requeued job beside its first
    attempt, each applying a palette of its own (``--codebook a.hex`` or ``b.hex``: no fit,
    so the processes are quick to start), and wait for both.

    Returns ``(survivor, other, processes, stderrs)``: the palette of the one run that
    exited 0, the other's, and each run's process and stderr by palette.
    """
    for name, colours in [("a.hex", "000000 ff0000 00ff00 0000ff"), ("b.hex", "ffffff 808080")]:
        (tmp_path / name).write_text(colours.replace(" ", "\n"))
    procs = {
        palette: subprocess.Popen(
            [sys.executable, "-m", "bigquant", *map(str, args), "--codebook", tmp_path / palette],
            stderr=subprocess.PIPE,
            text=True,
        )
        for palette in ("a.hex", "b.hex")
    }
    errs = {palette: proc.communicate(timeout=120)[1] for palette, proc in procs.items()}
    (survivor,) = [palette for palette, proc in procs.items() if proc.returncode == 0]
    (other,) = set(procs) - {survivor}
    return survivor, other, procs, errs


#: Debian's chromium, which Playwright drives (its own browser downloads do not work here).
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright; a skip saying what is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: .ci/tiles-setup.sh installs Debian's chromium")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()


def sigint_as_a_terminal_gives_it() -> None:
    """For ``Popen(preexec_fn=...)``: Ctrl-C's default action in the child, even when the
    tests run in the background (``nohup``, ``&``), whose children start with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
