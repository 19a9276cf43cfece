# The public API. bigquant/__init__.py loads each name from here on first use.
from .errors import BigquantError, ClusterError, ParameterError
from .export import decompress
from .fit import FitResult, fit_codebook, fit_collection
from .label import apply_codebook, assign
from .palettes import load_codebook
from .pipeline import compress, compress_many
from .read import Image, as_image, open_image
from .render import palette_image, preview
from .sample import sample_pixels
from .store import LabelArray, Store, StoreMeta, open_store
from .tiles import XYZ, DeepZoom, write_tiles
from .view import Viewer, view_store

__version__: str

__all__ = [
    "XYZ",
    "BigquantError",
    "ClusterError",
    "DeepZoom",
    "FitResult",
    "Image",
    "LabelArray",
    "ParameterError",
    "Store",
    "StoreMeta",
    "Viewer",
    "apply_codebook",
    "as_image",
    "assign",
    "compress",
    "compress_many",
    "decompress",
    "fit_codebook",
    "fit_collection",
    "load_codebook",
    "open_image",
    "open_store",
    "palette_image",
    "preview",
    "sample_pixels",
    "view_store",
    "write_tiles",
]
