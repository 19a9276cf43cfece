"""Use bigquant's building blocks on a dask array you already have.

    python examples/api_on_dask_array.py

Any (rows, columns[, channels]) dask array of uint8, uint16 or float32 works:
here, a photograph tiled into a 4 x 4 mosaic with flips, built lazily.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from sklearn.datasets import load_sample_image

import bigquant


def main() -> None:
    photo = da.from_array(load_sample_image("china.jpg"), chunks=(256, 256, 3))
    row = da.concatenate([photo, photo[:, ::-1]] * 2, axis=1)
    image = da.concatenate([row, row[::-1]] * 2, axis=0)  # 1708 x 2560, lazy

    fit = bigquant.fit_codebook(image, 32, sample_size=200_000, seed=0)
    labels = bigquant.assign(image, fit.codebook)  # lazy (rows, columns) uint8
    quantized = bigquant.apply_codebook(labels, fit.codebook)  # lazy codebook[labels]
    mse = float(((quantized.astype(np.float64) - image) ** 2).mean().compute())
    print(f"{len(fit.codebook)} colours after {fit.n_iter} iterations, MSE {mse:.1f}")

    # Or the whole pipeline, writing a store you can `bigquant info` / `decompress`:
    meta = bigquant.compress(image, "mosaic.zarr", 32, overwrite=True)
    print(f"mosaic.zarr: PSNR {meta.psnr:.2f} dB")


if __name__ == "__main__":
    main()
