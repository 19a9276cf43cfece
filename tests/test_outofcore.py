"""Out-of-core: a few-hundred-megapixel image compresses in memory far below its decoded size."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import zarr

from bigquant.kernels.nearest import nearest
from bigquant.mosaic import write_mosaic
from bigquant.read import open_image

SIDE = 16384  # 268 megapixels, 805 MB of decoded RGB
_PEAK = (
    "import resource, subprocess, sys; "
    "r = subprocess.run(sys.argv[1:]); "
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
)
_BASELINE = (
    "import resource, bigquant.pipeline, bigquant.cli, dask_ml.cluster, sklearn.cluster, zarr, "
    "tifffile; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
)


def peak_rss(*command: str) -> tuple[int, int]:
    """(exit code, peak resident bytes) of a command run in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    code, peak = out.stdout.split()[-2:]
    return int(code), int(peak)


def test_few_hundred_megapixels_in_bounded_memory(tmp_path):
    # Uncompressed: zlib would spend 17 s writing the input, and decoding tiles takes no memory.
    src = write_mosaic(tmp_path / "big.tif", SIDE, SIDE, tile=512, compression=None)
    decoded = SIDE * SIDE * 3
    code, peak = peak_rss(
        sys.executable,
        "-m",
        "bigquant",
        "compress",
        str(src),
        str(tmp_path / "big.zarr"),
        "--colors",
        "16",
        "--sample",
        "200000",
        "-q",
    )
    assert code == 0
    # What importing dask, dask-ml, scikit-learn and zarr costs whatever the image size.
    baseline = int(
        subprocess.run(
            [sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True
        ).stdout
    )
    working = peak - baseline
    print(
        f"peak {peak / 2**20:.0f} MiB, imports {baseline / 2**20:.0f} MiB, "
        f"working {working / 2**20:.0f} MiB, decoded image {decoded / 2**20:.0f} MiB"
    )
    assert peak < decoded
    assert working < decoded / 4

    # The labels are right where we look: a full-resolution tile far from the origin.
    group = zarr.open_group(tmp_path / "big.zarr", mode="r")
    codebook = np.asarray(group.attrs["codebook"], np.uint8)
    window = np.s_[SIDE - 700 : SIDE - 300, 9000:9400]
    pixels = open_image(src).data[window].compute()
    expected, _ = nearest(pixels.reshape(-1, 3), codebook)
    np.testing.assert_array_equal(group["labels"][window].ravel(), expected)
