"""bigquant: out-of-core k-means colour quantization of images far larger than memory.

The heavy dependencies (dask-ml, zarr, tifffile) load on first use, so that
``import bigquant`` and the CLI's ``--help`` stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "compress": "bigquant.pipeline",
    "compress_many": "bigquant.pipeline",
    "load_codebook": "bigquant.palettes",
    "decompress": "bigquant.export",
    "preview": "bigquant.render",
    "palette_image": "bigquant.render",
    "open_store": "bigquant.store",
    "Store": "bigquant.store",
    "StoreMeta": "bigquant.store",
    "open_image": "bigquant.read",
    "fit_codebook": "bigquant.fit",
    "fit_collection": "bigquant.fit",
    "FitResult": "bigquant.fit",
    "sample_pixels": "bigquant.sample",
    "assign": "bigquant.label",
    "apply_codebook": "bigquant.label",
    "BigquantError": "bigquant.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'bigquant' has no attribute {name!r}")
