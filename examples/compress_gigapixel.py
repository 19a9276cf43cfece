"""Compress a generated multi-gigapixel TIFF of real photographs, out of core.

    python examples/compress_gigapixel.py --side 65536 --workdir /data/scratch

writes a 65536 x 65536 (4.3 gigapixel, 12.9 GB decoded) tiled zlib BigTIFF
tile by tile, then compresses it to 256 colours. Neither step holds the image
in memory. Needs about 12 GB of free disk for the TIFF.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import bigquant
from bigquant.mosaic import write_mosaic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=65536, help="image side in pixels")
    parser.add_argument("--colors", type=int, default=256)
    parser.add_argument("--workdir", type=Path, default=Path("."))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    src = args.workdir / f"mosaic-{args.side}.tif"
    if not src.exists():
        started = time.perf_counter()
        write_mosaic(src, args.side, args.side)
        print(f"wrote {src} in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    meta = bigquant.compress(
        src, args.workdir / f"mosaic-{args.side}.zarr", args.colors, overwrite=True
    )
    seconds = time.perf_counter() - started
    megapixels = args.side * args.side / 1e6
    print(
        f"{megapixels:.0f} MP in {seconds:.0f} s ({megapixels / seconds:.1f} MP/s), "
        f"{meta.n_colors} colours, PSNR {meta.psnr:.2f} dB"
    )


if __name__ == "__main__":
    main()
